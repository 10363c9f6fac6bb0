"""The outbox table as the relay sees it: claim pending rows, mark them sent, purge old ones.

PostgreSQL (asyncpg): a batch is claimed with ``FOR UPDATE SKIP LOCKED`` inside a transaction
that stays open while its rows are published, and each claimed aggregate key is held with a
transaction-scoped advisory lock. So a second relay skips both the rows and every other row of
those keys: several relays run in parallel, never send the same row twice, and never overtake
one another within a key. Rows are marked sent in the same transaction, after the broker
confirmed them: a crash in between leaves them pending, to be sent again with the same id.
Inserts wake the relays through the table's NOTIFY trigger.

SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock for the batch, so relays take
turns; there is no NOTIFY, relays poll.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from eventworker.errors import ConfigError, OutboxError
from eventworker.outbox.table import channel, check_table, lock_space
from eventworker.settings import redact_url


@dataclass(frozen=True, slots=True)
class Row:
    """One pending outbox row."""

    seq: int
    event_id: str
    routing_key: str
    aggregate_key: str | None
    body: bytes
    headers: dict[str, Any] | None
    correlation_id: str | None


@dataclass(slots=True)
class Done:
    """What became of a claimed batch: sent seqs, failed (seq, error); the rest untouched."""

    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


Send = Callable[[list[Row]], Awaitable[Done]]


class OutboxStore(Protocol):
    async def process(self, limit: int, send: Send) -> tuple[int, Done]:
        """Claim up to ``limit`` rows, ``send`` them, record the outcome; (claimed, done).

        Raises:
            OutboxError: the database failed; nothing was marked.
        """

    async def purge(self, older_than: float) -> int:
        """Delete rows sent more than ``older_than`` seconds ago; how many."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever rows were committed (no-op where unsupported)."""

    async def close(self) -> None: ...


def _row(record: Any) -> Row:
    """A Row from a database record in the column order of ``_SELECT``."""
    seq, event_id, routing_key, aggregate_key, body, headers, correlation_id = record
    parsed = json.loads(headers) if headers else None
    return Row(
        seq,
        event_id,
        routing_key,
        aggregate_key,
        bytes(body),
        parsed if isinstance(parsed, dict) else None,
        correlation_id,
    )


_SELECT = "seq, event_id, routing_key, aggregate_key, body, headers, correlation_id"


class PostgresOutboxStore:
    """The outbox on PostgreSQL through asyncpg: one connection for work, one for LISTEN."""

    def __init__(self, work: Any, listener: Any, *, table: str, delete_sent: bool) -> None:
        self._work, self._listener = work, listener
        self._table = t = check_table(table)
        self._delete_sent = delete_sent
        space = lock_space(t)
        # Two statements, so that the rows are read with a snapshot taken after the key locks:
        # a relay that held a key commits before it lets go of it, so every row it sent or
        # kept pending (a failed publish) is seen. Selecting rows and locking keys in one
        # statement read the rows with a snapshot older than the lock: a key released in the
        # meantime had its later rows taken past an earlier row still pending.
        self._lock_keys = (
            f"SELECT aggregate_key FROM (SELECT aggregate_key, min(seq) AS head FROM {t} "
            f"WHERE sent_at IS NULL AND aggregate_key IS NOT NULL GROUP BY aggregate_key "
            f"ORDER BY head LIMIT $1) AS heads "
            f"WHERE pg_try_advisory_xact_lock({space}, hashtext(aggregate_key))"
        )
        self._claim = (
            f"SELECT {_SELECT} FROM {t} WHERE sent_at IS NULL AND "
            f"(aggregate_key IS NULL OR aggregate_key = ANY($2::text[])) "
            f"ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        )

    @classmethod
    async def open(cls, dsn: str, *, table: str, delete_sent: bool) -> PostgresOutboxStore:
        """Raises: OutboxError (unreachable, refused, or the table does not exist)."""
        import asyncpg  # the postgres extra; only the relay needs it

        try:
            work = await asyncpg.connect(dsn, timeout=10)
            listener = await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise OutboxError(
                f"cannot connect to {redact_url(dsn)}: {redact_url(str(exc))}"
            ) from None
        store = cls(work, listener, table=table, delete_sent=delete_sent)
        if await work.fetchval("SELECT to_regclass($1)", table) is None:
            await store.close()
            raise OutboxError(f"outbox table {table!r} does not exist: run eventworker outbox init")
        return store

    async def process(self, limit: int, send: Send) -> tuple[int, Done]:
        import asyncpg

        try:
            async with self._work.transaction():
                keys = [r[0] for r in await self._work.fetch(self._lock_keys, limit)]
                rows = [_row(r) for r in await self._work.fetch(self._claim, limit, keys)]
                if not rows:
                    return 0, Done()
                done = await send(rows)
                t = self._table
                if done.sent and self._delete_sent:
                    await self._work.execute(f"DELETE FROM {t} WHERE seq = ANY($1)", done.sent)
                elif done.sent:
                    await self._work.execute(
                        f"UPDATE {t} SET sent_at = now(), attempts = attempts + 1 "
                        f"WHERE seq = ANY($1)",
                        done.sent,
                    )
                if done.failed:
                    await self._work.executemany(
                        f"UPDATE {t} SET attempts = attempts + 1, last_error = $2 WHERE seq = $1",
                        done.failed,
                    )
                return len(rows), done
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise OutboxError(f"outbox database: {type(exc).__name__}: {exc}") from None

    async def purge(self, older_than: float) -> int:
        import asyncpg

        try:
            status = await self._work.execute(
                f"DELETE FROM {self._table} WHERE sent_at < now() - make_interval(secs => $1)",
                older_than,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise OutboxError(f"outbox database: {type(exc).__name__}: {exc}") from None
        return int(status.split()[-1])

    async def listen(self, wake: Callable[[], None]) -> None:
        await self._listener.add_listener(channel(self._table), lambda *_: wake())

    async def close(self) -> None:
        for conn in (self._work, self._listener):
            if not conn.is_closed():
                conn.terminate()


class SqliteOutboxStore:
    """The outbox in a SQLite file; every database call runs in a thread."""

    def __init__(self, conn: sqlite3.Connection, *, table: str, delete_sent: bool) -> None:
        self._conn = conn
        self._table = check_table(table)
        self._delete_sent = delete_sent

    @classmethod
    async def open(cls, path: Path, *, table: str, delete_sent: bool) -> SqliteOutboxStore:
        """Raises: OutboxError (the file or the table does not exist)."""
        conn = await asyncio.to_thread(cls._connect, path, table)
        return cls(conn, table=table, delete_sent=delete_sent)

    @staticmethod
    def _connect(path: Path, table: str) -> sqlite3.Connection:
        if not path.is_file():
            raise OutboxError(f"no SQLite database at {path}")
        # Autocommit mode: the store issues BEGIN IMMEDIATE itself; 30 s for a busy lock.
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if found is None:
            conn.close()
            raise OutboxError(f"outbox table {table!r} does not exist: run eventworker outbox init")
        return conn

    async def process(self, limit: int, send: Send) -> tuple[int, Done]:
        t, run = self._table, self._run
        try:
            await run("BEGIN IMMEDIATE")
            try:
                found = await run(
                    f"SELECT {_SELECT} FROM {t} WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                    (limit,),
                )
                rows = [_row(r) for r in found]
                done = await send(rows) if rows else Done()
                if done.sent:
                    marks = ",".join("?" * len(done.sent))
                    if self._delete_sent:
                        await run(f"DELETE FROM {t} WHERE seq IN ({marks})", done.sent)
                    else:
                        await run(
                            f"UPDATE {t} SET sent_at = (julianday('now') - 2440587.5) * 86400.0, "
                            f"attempts = attempts + 1 WHERE seq IN ({marks})",
                            done.sent,
                        )
                for seq, error in done.failed:
                    await run(
                        f"UPDATE {t} SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                        (error, seq),
                    )
                await run("COMMIT")
            except BaseException:
                await asyncio.shield(run("ROLLBACK"))
                raise
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox database: {exc}") from None
        return len(rows), done

    async def purge(self, older_than: float) -> int:
        sql = (
            f"DELETE FROM {self._table} WHERE sent_at < "
            f"(julianday('now') - 2440587.5) * 86400.0 - ?"
        )
        try:
            return await asyncio.to_thread(lambda: self._conn.execute(sql, (older_than,)).rowcount)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox database: {exc}") from None

    async def listen(self, wake: Callable[[], None]) -> None:
        """SQLite has no notifications: the relay polls."""

    async def close(self) -> None:
        self._conn.close()

    async def _run(self, sql: str, params: Any = ()) -> list[Any]:
        def run() -> list[Any]:
            return self._conn.execute(sql, params).fetchall()

        return await asyncio.to_thread(run)


async def open_store(dsn: SecretStr, *, table: str, delete_sent: bool) -> OutboxStore:
    """The store for ``dsn``: ``postgresql://...`` or ``sqlite:///path/to/file.db``.

    Raises:
        ConfigError: another scheme.
        OutboxError: the database or the table cannot be reached.
    """
    url = dsn.get_secret_value()
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresOutboxStore.open(url, table=table, delete_sent=delete_sent)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return await SqliteOutboxStore.open(path, table=table, delete_sent=delete_sent)
    raise ConfigError(
        f"outbox DSN {redact_url(url)[:100]!r}: expected postgresql://... or sqlite:///path"
    )
