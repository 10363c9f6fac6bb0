"""The in-memory inbox (``memory://``): for tests only.

It lives and dies with one worker process, so it neither survives a restart nor is shared
with another process: exactly what an inbox is for. Every operation runs without awaiting, so
it is atomic on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from eventworker.inbox.protocol import (
    Claimed,
    ClaimResult,
    Completed,
    Conflict,
    HandlerStats,
    InProgress,
    Key,
)


@dataclass(slots=True)
class _Entry:
    body_hash: str
    state: str  # "claimed" or "done"
    owner: str
    token: str
    expires_at: float
    done_at: float = 0.0
    duplicates: int = 0


class MemoryInboxStore:
    """An :class:`~eventworker.inbox.protocol.InboxStore` in a dict; one process, no persistence."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._entries: dict[Key, _Entry] = {}

    async def open(self, *, create: bool = True) -> None:
        pass

    async def close(self) -> None:
        pass

    async def claim(
        self, key: Key, *, body_hash: str, owner: str, token: str, lease: float
    ) -> ClaimResult:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(body_hash, "claimed", owner, token, now + lease)
            return Claimed()
        if entry.body_hash != body_hash:
            return Conflict(entry.body_hash)
        if entry.state == "done":
            entry.duplicates += 1
            return Completed()
        if entry.expires_at > now:
            return InProgress(entry.expires_at - now, entry.owner)
        entry.owner, entry.token, entry.expires_at = owner, token, now + lease
        return Claimed(takeover=True)

    async def renew(self, key: Key, *, token: str, lease: float) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry.token != token:
            return False
        if entry.state == "claimed":
            entry.expires_at = time.monotonic() + lease
        return True

    async def complete(self, key: Key, *, token: str) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry.token != token:
            return False
        if entry.state == "claimed":
            entry.state, entry.done_at = "done", time.monotonic()
        return True

    async def release(self, key: Key, *, token: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.token == token and entry.state == "claimed":
            del self._entries[key]

    async def stats(self) -> list[HandlerStats]:
        now = time.monotonic()
        rows: dict[str, list[int]] = {}
        for key, entry in self._entries.items():
            row = rows.setdefault(key.handler, [0, 0, 0, 0])
            if entry.state == "done":
                row[0] += 1
            elif entry.expires_at > now:
                row[1] += 1
            else:
                row[2] += 1
            row[3] += entry.duplicates
        return [HandlerStats(h, *counts) for h, counts in sorted(rows.items())]

    async def purge(self, *, older_than: float, handler: str | None = None) -> int:
        cutoff = time.monotonic() - older_than
        gone = [
            key
            for key, entry in self._entries.items()
            if (handler is None or key.handler == handler)
            and (entry.done_at if entry.state == "done" else entry.expires_at) <= cutoff
        ]
        for key in gone:
            del self._entries[key]
        return len(gone)
