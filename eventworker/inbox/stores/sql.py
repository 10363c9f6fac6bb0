"""The inbox as one SQL table, shared by the SQLite and PostgreSQL stores.

The table ``<name>`` holds one row per (handler, event id). Times are seconds since the epoch,
taken from the database's own clock (``{now}``), so every worker compares leases against the
same clock. Every operation is a single statement and therefore atomic without an explicit
transaction: a claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that either creates
the row, takes over a row whose lease ran out (same body), or changes nothing; only then are
the reasons read, in further statements. Statements use PostgreSQL's ``$n`` placeholders; the
SQLite store rewrites them to ``?n``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from eventworker.inbox.protocol import (
    Claimed,
    ClaimResult,
    Completed,
    Conflict,
    HandlerStats,
    InProgress,
    Key,
)

#: How often a claim re-reads an entry that changed between its statements.
_CLAIM_TRIES = 4

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {t} (
        handler TEXT NOT NULL,
        event_id TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        token TEXT NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION,
        claims INTEGER NOT NULL DEFAULT 1,
        duplicates INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (handler, event_id)
    )""",
    "CREATE INDEX IF NOT EXISTS {t}_done_at ON {t} (done_at) WHERE state = 'done'",
    "CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at) WHERE state = 'claimed'",
)

_SQL = {
    # $1 handler, $2 event id, $3 body hash, $4 owner, $5 token, $6 lease seconds.
    "claim": """INSERT INTO {t} (handler, event_id, body_hash, state, owner, token, claimed_at,
            expires_at)
        VALUES ($1, $2, $3, 'claimed', $4, $5, {now}, {now} + CAST($6 AS DOUBLE PRECISION))
        ON CONFLICT (handler, event_id) DO UPDATE SET
            owner = excluded.owner, token = excluded.token, claimed_at = excluded.claimed_at,
            expires_at = excluded.expires_at, claims = {t}.claims + 1
        WHERE {t}.state = 'claimed' AND {t}.expires_at <= excluded.claimed_at
            AND {t}.body_hash = excluded.body_hash
        RETURNING claims""",
    "duplicate": """UPDATE {t} SET duplicates = duplicates + 1
        WHERE handler = $1 AND event_id = $2 AND state = 'done' AND body_hash = $3""",
    "read": """SELECT state, body_hash, expires_at - {now}, owner FROM {t}
        WHERE handler = $1 AND event_id = $2""",
    # $4 lease seconds; the lease of a done entry no longer matters and is left alone.
    "renew": """UPDATE {t} SET expires_at = CASE WHEN state = 'claimed'
            THEN {now} + CAST($4 AS DOUBLE PRECISION) ELSE expires_at END
        WHERE handler = $1 AND event_id = $2 AND token = $3""",
    "complete": """UPDATE {t} SET state = 'done', done_at = coalesce(done_at, {now})
        WHERE handler = $1 AND event_id = $2 AND token = $3""",
    "release": """DELETE FROM {t}
        WHERE handler = $1 AND event_id = $2 AND token = $3 AND state = 'claimed'""",
    "stats": """SELECT handler,
            sum(CASE WHEN state = 'done' THEN 1 ELSE 0 END),
            sum(CASE WHEN state = 'claimed' AND expires_at > {now} THEN 1 ELSE 0 END),
            sum(CASE WHEN state = 'claimed' AND expires_at <= {now} THEN 1 ELSE 0 END),
            sum(duplicates)
        FROM {t} GROUP BY handler ORDER BY handler""",
    # $1 seconds, $2 handler or NULL for all.
    "purge": """DELETE FROM {t}
        WHERE handler = coalesce($2, handler)
            AND ((state = 'done' AND done_at <= {now} - CAST($1 AS DOUBLE PRECISION))
                OR (state = 'claimed' AND expires_at <= {now} - CAST($1 AS DOUBLE PRECISION)))""",
}


class SqlInboxStore(ABC):
    """An :class:`~eventworker.inbox.protocol.InboxStore` on a table named ``name``; subclasses
    connect and run statements (:meth:`_fetch`)."""

    #: The dialect's "now" in seconds since the epoch, on the database's clock.
    NOW: ClassVar[str]
    url: str

    def __init__(self, *, name: str) -> None:
        self.name = name
        self.schema = tuple(self._dialect(s.format(t=name)) for s in SCHEMA)
        self.sql = {k: self._dialect(v.format(t=name, now=self.NOW)) for k, v in _SQL.items()}

    def _dialect(self, sql: str) -> str:
        """Adapt a statement written with ``$n`` placeholders to the driver."""
        return sql

    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Run one statement in its own transaction and return every row.

        Raises:
            InboxError: the database failed.
        """

    @abstractmethod
    async def _count(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction and return how many rows it changed.

        Raises:
            InboxError: the database failed.
        """

    async def claim(
        self, key: Key, *, body_hash: str, owner: str, token: str, lease: float
    ) -> ClaimResult:
        k = (key.handler, key.event_id)
        for _ in range(_CLAIM_TRIES):
            rows = await self._fetch(self.sql["claim"], *k, body_hash, owner, token, lease)
            if rows:
                return Claimed(takeover=int(rows[0][0]) > 1)
            if await self._count(self.sql["duplicate"], *k, body_hash):
                return Completed()
            rows = await self._fetch(self.sql["read"], *k)
            if not rows:
                continue  # released between the statements: claim again
            state, stored, expires_in, holder = rows[0]
            if stored != body_hash:
                return Conflict(stored)
            if state == "claimed" and expires_in > 0:
                return InProgress(float(expires_in), holder)
            # Completed or ran out between the statements: look again.
        return InProgress(0.0, "")

    async def renew(self, key: Key, *, token: str, lease: float) -> bool:
        return bool(await self._count(self.sql["renew"], key.handler, key.event_id, token, lease))

    async def complete(self, key: Key, *, token: str) -> bool:
        return bool(await self._count(self.sql["complete"], key.handler, key.event_id, token))

    async def release(self, key: Key, *, token: str) -> None:
        await self._count(self.sql["release"], key.handler, key.event_id, token)

    async def stats(self) -> list[HandlerStats]:
        return [
            HandlerStats(str(h), int(c), int(p), int(e), int(d or 0))
            for h, c, p, e, d in await self._fetch(self.sql["stats"])
        ]

    async def purge(self, *, older_than: float, handler: str | None = None) -> int:
        return await self._count(self.sql["purge"], older_than, handler)
