"""The transactional outbox, application side: the table, and ``add()`` in the caller's
transaction.

An application that changes its database and must emit an event writes the event into the
outbox table *in the same transaction* as the change; ``eventworker outbox relay`` publishes it
afterwards. Either both are committed or neither: no event for a rolled-back change, no change
without its event. ``add`` works with sqlite3, psycopg (sync and async), asyncpg and
SQLAlchemy connections and sessions; it never commits. Nothing here imports a driver.

A delayed event (``delay=`` or ``at=``) keeps its due time, absolute, in the row's headers JSON
under ``x-eventworker-deliver-at`` (a name producers cannot set), so no column is added and a
table of any age takes it; the relay publishes it with what remains of the delay then.
"""

from __future__ import annotations

import inspect
import json
import re
import zlib
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from eventworker import envelope
from eventworker.errors import ConfigError, InvalidInputError
from eventworker.topology import delays

#: The table ``create`` makes and ``add`` writes to, unless told otherwise.
DEFAULT_TABLE = "eventworker_outbox"
#: Largest body ``add`` accepts by default; the relay's publisher refuses larger ones too.
DEFAULT_MAX_BODY_BYTES = 1_048_576
Dialect = Literal["postgresql", "sqlite"]
#: Lower-case identifiers only, optionally schema-qualified: they go into SQL unquoted and name
#: the LISTEN channel, so nothing here needs quoting rules.
_TABLE = re.compile(r"^(?:[a-z_][a-z0-9_]{0,40}\.)?[a-z_][a-z0-9_]{0,40}$")
_COLUMNS = "event_id, routing_key, aggregate_key, body, headers, correlation_id"
#: The headers-JSON entry of a delayed row: when it is due, ISO 8601 in UTC.
DELIVER_AT = "x-eventworker-deliver-at"


def check_table(table: str) -> str:
    """Raises ConfigError unless ``table`` is a plain lower-case (schema.)name."""
    if not _TABLE.match(table):
        raise ConfigError(
            f"outbox table {table[:100]!r}: use lower-case letters, digits and _ "
            f"(optionally schema.table), at most 41 characters each"
        )
    return table


def channel(table: str) -> str:
    """The LISTEN/NOTIFY channel the table's insert trigger notifies: the table's name."""
    return check_table(table).replace(".", "_")


def lock_space(table: str) -> int:
    """The first key of the table's per-aggregate advisory locks: a stable signed 32-bit int."""
    value = zlib.crc32(check_table(table).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def schema(dialect: Dialect, table: str = DEFAULT_TABLE) -> list[str]:
    """The statements that create ``table`` (idempotent): columns, indexes, and on PostgreSQL a
    trigger that wakes relays (NOTIFY, delivered at commit) after each inserting statement."""
    t = check_table(table)
    bare = t.rsplit(".", 1)[-1]
    if dialect == "sqlite":
        # AUTOINCREMENT: seq never goes back, even after the newest rows were deleted.
        return [
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, "
            "routing_key TEXT NOT NULL, aggregate_key TEXT, body BLOB NOT NULL, headers TEXT, "
            "correlation_id TEXT, "
            "created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0), "
            "sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)",
            f"CREATE INDEX IF NOT EXISTS {bare}_pending ON {bare} (seq) WHERE sent_at IS NULL",
            f"CREATE INDEX IF NOT EXISTS {bare}_sent ON {bare} (sent_at) WHERE sent_at IS NOT NULL",
        ]
    return [
        f"CREATE TABLE IF NOT EXISTS {t} ("
        "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
        "routing_key TEXT NOT NULL, aggregate_key TEXT, body BYTEA NOT NULL, headers TEXT, "
        "correlation_id TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
        "sent_at TIMESTAMPTZ, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)",
        f"CREATE INDEX IF NOT EXISTS {bare}_pending ON {t} (seq) WHERE sent_at IS NULL",
        f"CREATE INDEX IF NOT EXISTS {bare}_sent ON {t} (sent_at) WHERE sent_at IS NOT NULL",
        f"CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{channel(t)}', ''); RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS {bare}_notify ON {t}",
        f"CREATE TRIGGER {bare}_notify AFTER INSERT ON {t} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_notify()",
    ]


def _driver(conn: Any) -> tuple[str, Dialect, bool]:
    """(driver, dialect, is_async) of a connection, by the module of its class: no import."""
    module = type(conn).__module__.split(".")[0]
    if module == "sqlite3":
        return "sqlite3", "sqlite", False
    if module == "psycopg":
        return "psycopg", "postgresql", inspect.iscoroutinefunction(conn.execute)
    if module == "asyncpg":
        if type(conn).__name__ == "Pool":
            raise TypeError(
                "outbox.add needs the connection of your transaction, not a pool "
                "(async with pool.acquire() as conn, conn.transaction(): ...)"
            )
        return "asyncpg", "postgresql", True
    if module == "sqlalchemy":
        bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
        name = bind.dialect.name
        if name not in ("postgresql", "sqlite"):
            raise TypeError(f"the outbox supports PostgreSQL and SQLite, not {name}")
        if inspect.iscoroutinefunction(conn.execute):
            raise TypeError(
                "use outbox.add inside AsyncSession.run_sync / AsyncConnection.run_sync"
            )
        return "sqlalchemy", name, False
    raise TypeError(
        f"outbox.add does not know a {type(conn).__module__}.{type(conn).__name__}: pass a "
        f"sqlite3, psycopg or asyncpg connection, or a SQLAlchemy connection or session"
    )


def row(
    routing_key: str,
    data: Any,
    *,
    id: str | None = None,
    aggregate_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    correlation_id: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    delay: float | timedelta | None = None,
    at: datetime | None = None,
) -> tuple[str, str, str | None, bytes, str | None, str | None]:
    """The column values of one outbox row, checked as the publisher checks an event.

    Raises:
        InvalidInputError: a bad routing key, header, id, size or delay; data that is not JSON.
    """
    try:
        envelope.check_routing_key(routing_key)
        for name in headers or {}:
            envelope.check_header(name)
        body = envelope.encode_data(data)
        stored = dict(headers or {})
        due = _due(delay, at)
        if due is not None:
            stored[DELIVER_AT] = due
        header_text = json.dumps(stored, allow_nan=False) if stored else None
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"outbox event {routing_key[:100]!r}: {exc}") from None
    for value, what in ((id, "id"), (correlation_id, "correlation id")):
        if value is not None and not 0 < len(value.encode()) <= 255:
            raise InvalidInputError(f"outbox event: the {what} must be 1 to 255 bytes")
    if len(body) > max_body_bytes:
        raise InvalidInputError(
            f"outbox event {routing_key[:100]!r}: body of {len(body)} bytes exceeds "
            f"max_body_bytes {max_body_bytes}"
        )
    event_id = id or envelope.new_id()
    return event_id, routing_key, aggregate_key, body, header_text, correlation_id


def _due(delay: float | timedelta | None, at: datetime | None) -> str | None:
    """When a delayed row is due, by this clock now (ISO 8601, UTC); None when not delayed.

    Raises:
        ValueError: a negative delay, both given, ``at`` without a time zone, or a delay longer
            than the most levels hold.
    """
    if delay is None and at is None:
        return None
    seconds = delays.seconds(delay, at)  # checks both
    if seconds > delays.longest(delays.MAX_LEVELS):
        raise ValueError(f"a delay of {seconds} s is longer than any delay levels hold")
    due = at if at is not None else datetime.now(UTC) + timedelta(seconds=seconds)
    return due.astimezone(UTC).isoformat()


def add(
    conn: Any,
    routing_key: str,
    data: Any,
    *,
    id: str | None = None,
    aggregate_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    correlation_id: str | None = None,
    table: str = DEFAULT_TABLE,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    delay: float | timedelta | None = None,
    at: datetime | None = None,
) -> Any:
    """Write one event into the outbox, in the transaction open on ``conn``; never commits.

    Returns the event id; for asyncpg and psycopg's ``AsyncConnection``, an awaitable of it
    (``await outbox.add(conn, ...)``). Events with the same ``aggregate_key`` are published in
    the order of their rows; events without one in any order. With ``delay`` (seconds, or a
    timedelta) or ``at`` (an aware datetime), the event is due then, counted from this call;
    the relay has the broker hold it for what remains (the relay needs ``delay_levels``).

    Raises:
        InvalidInputError: the event is refused (see :func:`row`); nothing was written.
        TypeError: ``conn`` is no connection this function knows.
        ConfigError: ``table`` is not a plain lower-case name.
    """
    values = row(
        routing_key,
        data,
        id=id,
        aggregate_key=aggregate_key,
        headers=headers,
        correlation_id=correlation_id,
        max_body_bytes=max_body_bytes,
        delay=delay,
        at=at,
    )
    driver, _, is_async = _driver(conn)
    t = check_table(table)
    if driver == "sqlite3":
        conn.execute(f"INSERT INTO {t} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", values)
    elif driver == "sqlalchemy":
        from sqlalchemy import text  # the caller's own dependency, imported only for it

        names = [c.strip() for c in _COLUMNS.split(",")]
        placeholders = ", ".join(f":{n}" for n in names)
        conn.execute(
            text(f"INSERT INTO {t} ({_COLUMNS}) VALUES ({placeholders})"),
            dict(zip(names, values, strict=True)),
        )
    elif driver == "psycopg":
        result = conn.execute(
            f"INSERT INTO {t} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)", values
        )
        if is_async:
            return _after(result, values[0])
    else:  # asyncpg
        sql = f"INSERT INTO {t} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        return _after(conn.execute(sql, *values), values[0])
    return values[0]


async def _after(pending: Awaitable[Any], event_id: str) -> str:
    await pending
    return event_id


def create(conn: Any, table: str = DEFAULT_TABLE) -> Any:
    """Create the outbox table on ``conn`` if it does not exist (for psycopg, sqlite3 and
    SQLAlchemy; the caller commits). With asyncpg or psycopg's ``AsyncConnection``, returns an
    awaitable. ``eventworker outbox init --dsn`` does the same from the command line.

    Raises:
        TypeError: ``conn`` is no connection this module knows.
    """
    driver, dialect, is_async = _driver(conn)
    statements = schema(dialect, table)
    if driver == "sqlalchemy":
        from sqlalchemy import text

        for statement in statements:
            conn.execute(text(statement))
        return None
    if is_async:
        return _run_all(conn, statements)
    for statement in statements:
        conn.execute(statement)
    return None


async def _run_all(conn: Any, statements: list[str]) -> None:
    for statement in statements:
        await conn.execute(statement)
