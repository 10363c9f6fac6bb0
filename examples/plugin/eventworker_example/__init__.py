"""An example eventworker plugin; see handlers.py and audit.py."""
