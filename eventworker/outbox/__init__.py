"""The transactional outbox: events written in the application's own database transaction
(``add``), and the relay that publishes them.

``eventworker.outbox`` is public API: applications call :func:`add` and :func:`create`, and
the table's DDL is :func:`schema`. The relay and the claim store are internal.
"""

from eventworker.outbox.table import DEFAULT_TABLE, add, create, schema

__all__ = ["DEFAULT_TABLE", "add", "create", "schema"]
