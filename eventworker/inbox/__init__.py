"""The inbox of idempotent handlers: the claim protocol a worker runs around a handler, and
the stores that keep the claims (``stores/``)."""
