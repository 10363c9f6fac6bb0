"""Logs, trace context and queue statistics: what every other wing reports through."""
