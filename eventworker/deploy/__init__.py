"""Deployment manifests rendered from the handlers and settings ``eventworker run`` would use."""
