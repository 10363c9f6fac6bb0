"""The PostgreSQL inbox (``postgresql://user:password@host:5432/database``), with asyncpg.

For workers on many machines. Leases are measured on the database server's clock, so the
workers' clocks need not agree. This is the one store with transactions a handler can use:
``ctx.transaction()`` hands the handler a connection inside a transaction that also writes
the inbox's "done" mark, so the handler's writes to the same database and the mark commit
together or not at all (exactly-once effects).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from eventworker.errors import ClaimLostError, InboxError
from eventworker.inbox.protocol import Key
from eventworker.inbox.stores.sql import SqlInboxStore
from eventworker.settings import redact_url

#: What asyncpg raises when the server or the network fails.
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class PostgresInboxStore(SqlInboxStore):
    """The inbox table in PostgreSQL, through a pool of ``pool_size`` connections."""

    NOW = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"

    def __init__(self, url: str, *, name: str, pool_size: int = 10, timeout: float = 10.0) -> None:
        super().__init__(name=name)
        self._dsn = url
        self.url = redact_url(url)
        self._pool_size = max(pool_size, 2)
        self._timeout = timeout
        self._pool_obj: asyncpg.Pool | None = None

    async def open(self, *, create: bool = True) -> None:
        try:
            self._pool_obj = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
            async with self._pool_obj.acquire() as conn, conn.transaction():
                # Serialise schema creation: CREATE ... IF NOT EXISTS races between processes.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"eventworker-inbox:{self.name}"
                )
                for statement in self.schema if create else ():
                    await conn.execute(statement)
        except _FAILURES as exc:
            await self.close()
            raise self._error("cannot open", exc) from None

    async def close(self) -> None:
        if self._pool_obj is not None:
            pool, self._pool_obj = self._pool_obj, None
            await pool.close()

    def _pool(self) -> asyncpg.Pool:
        if self._pool_obj is None:
            raise InboxError(f"the PostgreSQL inbox {self.url} is not open")
        return self._pool_obj

    def _error(self, doing: str, exc: BaseException) -> InboxError:
        # The message of a connection error may quote the DSN: redact whatever it says.
        detail = redact_url(str(exc)) or type(exc).__name__
        return InboxError(f"{doing} the PostgreSQL inbox {self.url}: {detail}")

    async def _fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        try:
            return [tuple(row) for row in await self._pool().fetch(sql, *args)]
        except _FAILURES as exc:
            raise self._error("failed on", exc) from None

    async def _count(self, sql: str, *args: Any) -> int:
        try:
            return _affected(await self._pool().execute(sql, *args))
        except _FAILURES as exc:
            raise self._error("failed on", exc) from None

    @asynccontextmanager
    async def transaction(self, key: Key, *, token: str) -> AsyncIterator[Any]:
        """A connection in a transaction that marks ``key`` done under ``token`` on exit.

        Raises:
            ClaimLostError: the claim was taken over meanwhile; everything rolls back.
        """
        async with self._pool().acquire() as conn, conn.transaction():
            yield conn
            status = await conn.execute(self.sql["complete"], key.handler, key.event_id, token)
            if not _affected(status):
                raise ClaimLostError(
                    f"{key.handler} lost its claim on {key.event_id} (its lease ran out and "
                    f"another worker took the event over); the transaction was rolled back"
                )


def _affected(status: str) -> int:
    """Rows a statement changed, from its command tag (``UPDATE 1``, ``DELETE 0``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
