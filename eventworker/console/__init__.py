"""The operator console: handlers, backlogs, dead letters with their diagnosis, replay and the
event catalogue, as web pages (``eventworker console``, the ``console`` extra)."""
