"""The inbox store protocol, what its operations answer, and what the inbox answers a worker.

An idempotent handler's delivery is first *claimed* in an inbox store under the key
``(handler name, event id)``, with a lease and the sha256 of its body. The store answers
whether this worker may run it (:class:`Claimed`), whether it was done already
(:class:`Completed`), whether another worker holds it now (:class:`InProgress`), or whether the
id came before with another body (:class:`Conflict`). Every operation that changes an entry
names the claim's ``token``, so a worker whose lease ran out and whose event was taken over can
no longer complete or release it (fencing).

The stores (SQLite, PostgreSQL, Redis, memory) implement :class:`InboxStore`;
:mod:`eventworker.inbox.claims` runs the protocol around a handler.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

#: The dead-letter reason of a copy whose id came before with another body.
CONFLICT_REASON = "idempotency_key_conflict"


def body_hash(body: bytes) -> str:
    """The sha256 of a raw body, hex: what conflict detection compares."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Key:
    """An inbox entry's key: each handler handles each event once."""

    handler: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """This worker holds the event now. ``takeover``: an earlier owner's lease had run out."""

    takeover: bool = False


@dataclass(frozen=True, slots=True)
class Completed:
    """The event was handled already; the store counted this copy as a duplicate."""


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another claim holds the event; its lease runs out in ``expires_in`` seconds unless
    renewed."""

    expires_in: float
    owner: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """The event id is known with another body hash (``stored``)."""

    stored: str


ClaimResult = Claimed | Completed | InProgress | Conflict


@dataclass(frozen=True, slots=True)
class HandlerStats:
    """One handler's entries: done, held under a live lease, held under a lease that ran out
    (the owner died and no copy came back yet), and duplicate copies skipped."""

    handler: str
    completed: int
    in_progress: int
    expired: int
    duplicates: int


class InboxStore(Protocol):
    """Where claims live. Every method may raise :class:`~eventworker.errors.InboxError`.

    Times (leases, retention) are in seconds; stores measure them with the clock of the store
    itself where it has one (PostgreSQL, Redis), so workers on machines with skewed clocks
    agree on when a lease ran out.
    """

    #: The store's URL with any password masked, for logs and errors.
    url: str

    async def open(self, *, create: bool = True) -> None:
        """Connect, and create the schema if missing and ``create`` (safe to run from many
        processes at once). Without ``create``, a missing inbox is an error."""

    async def close(self) -> None: ...

    async def claim(
        self, key: Key, *, body_hash: str, owner: str, token: str, lease: float
    ) -> ClaimResult:
        """Atomically: create the entry held by ``token`` for ``lease`` seconds, or take over
        an entry whose lease ran out (same body), or say why not. A :class:`Completed` answer
        counts one duplicate in the entry."""

    async def renew(self, key: Key, *, token: str, lease: float) -> bool:
        """Extend the lease of a claim ``token`` holds; False when the token lost it."""

    async def complete(self, key: Key, *, token: str) -> bool:
        """Mark the entry done, kept for the retention period; False when ``token`` no longer
        holds it. True again when it is done already under ``token``."""

    async def release(self, key: Key, *, token: str) -> None:
        """Drop a claim ``token`` holds and that is not done, so a retry can claim it."""

    async def stats(self) -> list[HandlerStats]:
        """Entries per handler, sorted by handler name."""

    async def purge(self, *, older_than: float, handler: str | None = None) -> int:
        """Delete entries done more than ``older_than`` seconds ago, and claims whose lease ran
        out that long ago (abandoned); never a live claim. Returns how many went."""


@runtime_checkable
class TransactionalStore(Protocol):
    """A store that can hand a handler a database transaction holding the "done" mark."""

    def transaction(self, key: Key, *, token: str) -> AbstractAsyncContextManager[Any]:
        """A transaction on the store's database; on a normal exit it marks the entry done
        under ``token`` and commits, so the handler's writes and the mark commit together.

        Raises:
            ClaimLostError: on exit, when ``token`` no longer holds the entry (rolled back).
        """


@dataclass(frozen=True, slots=True)
class AlreadyHandled:
    """An admission answer: this handler handled the event already (a duplicate)."""


@dataclass(frozen=True, slots=True)
class NotAdmitted:
    """An admission answer: the handler may not run the event now; hand it back unrun.

    Reasons: ``claim_held`` (another worker held the event for longer than the inbox's
    ``wait``) and ``inbox_unavailable`` (the store failed for that long).
    """

    reason: str
