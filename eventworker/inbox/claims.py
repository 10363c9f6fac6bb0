"""The inbox a worker runs idempotent handlers with: claim, wait, renew, complete, release.

Around each delivery of an idempotent handler, dispatch asks :meth:`Inbox.admit` first. A
claim held by another worker is waited for here, polling the store, for at most ``wait``
seconds: the holder usually finishes within that time (the copy is then a duplicate and is
acked unrun), and a holder that died loses its claim when its lease runs out (this copy then
takes the event over and runs it, so a crash leads to the work being done once, not zero
times). Only a claim held longer than ``wait`` hands the copy back to the broker
(:class:`NotAdmitted`): waiting rather than requeueing at once keeps redeliveries, which quorum
queues count against their delivery limit, rare.

While the handler runs, its lease is renewed every third of the lease, so a slow handler keeps
its claim and a dead worker's claim runs out within one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger

from eventworker.backoff import Backoff
from eventworker.errors import IdempotencyConflictError, InboxError
from eventworker.inbox.protocol import (
    AlreadyHandled,
    Claimed,
    ClaimResult,
    Completed,
    Conflict,
    InboxStore,
    InProgress,
    Key,
    NotAdmitted,
    TransactionalStore,
    body_hash,
)
from eventworker.settings import redact_url

#: Longest a single store operation may take before it counts as a failure.
STORE_TIMEOUT = 10.0
#: Polling a claim held elsewhere: first pause and longest pause, in seconds (doubling).
FIRST_POLL, MAX_POLL = 0.05, 1.0
#: Renewals per lease period, so that one late renewal does not lose the claim.
RENEWALS_PER_LEASE = 3

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Claim:
    """This worker's hold on an event: the key and the token that fences it."""

    key: Key
    token: str


Admission = Claim | AlreadyHandled | NotAdmitted | IdempotencyConflictError


def owner_id() -> str:
    """Who holds a claim, for operators: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Inbox:
    """Claims with leases in ``store`` for idempotent handlers; see the module docstring."""

    def __init__(
        self,
        store: InboxStore,
        *,
        lease: float,
        wait: float,
        retention: float,
        cleanup_interval: float = 0.0,
    ) -> None:
        self.store = store
        self.lease = lease
        self.wait = wait
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.owner = owner_id()
        self.handlers: tuple[str, ...] = ()
        self._cleanup: asyncio.Task[None] | None = None
        #: Tokens of claims whose handler's transaction committed the done mark already.
        self._committed: set[str] = set()

    @property
    def transactional(self) -> bool:
        return isinstance(self.store, TransactionalStore)

    async def start(self) -> None:
        """Open the store; remove expired entries now and every ``cleanup_interval`` seconds.

        Raises:
            InboxError: the store cannot be opened.
        """
        await self._call(self.store.open())
        logger.info(
            "inbox {} for idempotent handlers {}: lease {:g}s, wait {:g}s, retention {:g}s",
            self.store.url,
            ", ".join(self.handlers) or "(none)",
            self.lease,
            self.wait,
            self.retention,
        )
        if self.cleanup_interval > 0:
            self._cleanup = asyncio.create_task(self._clean_up(), name="eventworker-inbox-cleanup")

    async def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup
        with contextlib.suppress(InboxError):
            await self._call(self.store.close())

    async def admit(self, key: Key, body: bytes) -> Admission:
        """Claim ``key`` for this worker, waiting up to ``wait`` seconds for another holder.

        Returns the :class:`Claim` to run the handler under, :class:`AlreadyHandled` when the event
        was handled already, an :class:`IdempotencyConflictError` when the id came before
        with another body, or :class:`NotAdmitted` when the claim stayed held elsewhere or the
        store kept failing for ``wait`` seconds.
        """
        digest = body_hash(body)
        deadline = time.monotonic() + self.wait
        backoff = Backoff(FIRST_POLL, MAX_POLL)
        while True:
            token = uuid.uuid4().hex
            nap = backoff.next()
            result: ClaimResult | InboxError
            try:
                result = await self._call(
                    self.store.claim(
                        key, body_hash=digest, owner=self.owner, token=token, lease=self.lease
                    )
                )
            except InboxError as exc:
                logger.warning(
                    "{}: cannot claim {} in the inbox: {}", key.handler, key.event_id, exc
                )
                result = exc
            match result:
                case Claimed(takeover=takeover):
                    if takeover:
                        logger.warning(
                            "{}: took over {}: its previous holder's lease ran out",
                            key.handler,
                            key.event_id,
                        )
                    return Claim(key, token)
                case Completed():
                    return AlreadyHandled()
                case Conflict(stored=stored):
                    return IdempotencyConflictError(
                        f"event {key.event_id} was handled by {key.handler} with a body of "
                        f"sha256 {stored[:16]}..., this copy's is {digest[:16]}...",
                        event_id=key.event_id,
                        handler=key.handler,
                    )
                case InProgress(expires_in=expires_in):
                    # Wake up when the holder's lease runs out, if that comes before the pause.
                    nap = max(min(nap, expires_in + 0.005), 0.01)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                held = isinstance(result, InProgress)
                return NotAdmitted("claim_held" if held else "inbox_unavailable")
            await asyncio.sleep(min(nap, remaining))

    @asynccontextmanager
    async def holding(self, claim: Claim) -> AsyncIterator[None]:
        """Keep ``claim``'s lease renewed while the body runs."""
        renewer = asyncio.create_task(self._renew(claim), name="eventworker-inbox-lease")
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def complete(self, claim: Claim) -> None:
        """Mark the event done, retrying a failing store for up to ``wait`` seconds.

        A done mark that cannot be written is logged, not raised: the handler's effect has
        happened and the message is acked regardless; a later duplicate may run it again.
        """
        if claim.token in self._committed:
            self._committed.discard(claim.token)
            return
        key = claim.key
        deadline = time.monotonic() + self.wait
        backoff = Backoff(FIRST_POLL, MAX_POLL)
        while True:
            try:
                if not await self._call(self.store.complete(key, token=claim.token)):
                    logger.error(
                        "{}: lost the claim on {} while it ran (its lease ran out): another "
                        "worker may have run it too",
                        key.handler,
                        key.event_id,
                    )
                return
            except InboxError as exc:
                if time.monotonic() + backoff.peek() > deadline:
                    logger.error(
                        "{}: could not mark {} done in the inbox: {}; a duplicate may run it again",
                        key.handler,
                        key.event_id,
                        exc,
                    )
                    return
            await asyncio.sleep(backoff.next())

    async def release(self, claim: Claim) -> None:
        """Drop the claim after a failed attempt so its retry can claim the event at once.

        A failure is logged only: the claim then runs out with its lease. After the handler's
        transaction committed, the event is done and there is nothing to release.
        """
        if claim.token in self._committed:
            self._committed.discard(claim.token)
            return
        try:
            await self._call(self.store.release(claim.key, token=claim.token))
        except InboxError as exc:
            logger.warning(
                "{}: could not release the claim on {}: {}; it runs out in {:g}s",
                claim.key.handler,
                claim.key.event_id,
                exc,
                self.lease,
            )

    def transaction(self, claim: Claim) -> AbstractAsyncContextManager[Any]:
        """What ``ctx.transaction()`` returns for a handler running under ``claim``.

        Raises:
            InboxError: the store has no transactions (only PostgreSQL has).
        """
        if not isinstance(self.store, TransactionalStore):
            raise InboxError(
                f"ctx.transaction() needs the PostgreSQL inbox; this worker's is {self.store.url}"
            )
        return self._committing(self.store, claim)

    @asynccontextmanager
    async def _committing(self, store: TransactionalStore, claim: Claim) -> AsyncIterator[Any]:
        async with store.transaction(claim.key, token=claim.token) as conn:
            yield conn
        self._committed.add(claim.token)

    async def _renew(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.lease / RENEWALS_PER_LEASE)
            try:
                if not await self._call(
                    self.store.renew(claim.key, token=claim.token, lease=self.lease)
                ):
                    logger.error(
                        "{}: lost the claim on {} while it runs: another worker may run it too",
                        claim.key.handler,
                        claim.key.event_id,
                    )
                    return
            except InboxError as exc:
                logger.warning(
                    "{}: could not renew the claim on {}: {}",
                    claim.key.handler,
                    claim.key.event_id,
                    exc,
                )

    async def _clean_up(self) -> None:
        while True:
            try:
                removed = await self._call(self.store.purge(older_than=self.retention))
                if removed:
                    logger.info("inbox: removed {} entries older than the retention", removed)
            except InboxError as exc:
                logger.warning("inbox cleanup failed: {}", exc)
            await asyncio.sleep(self.cleanup_interval)

    async def _call(self, operation: Awaitable[T]) -> T:
        """One store operation, bounded by :data:`STORE_TIMEOUT`.

        Raises:
            InboxError: the store failed or did not answer in time. Anything else a store
                raises becomes one too: a delivery must never die with an unexpected error
                and stay unsettled.
        """
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                return await operation
        except InboxError:
            raise
        except TimeoutError:
            raise InboxError(
                f"the inbox at {self.store.url} did not answer within {STORE_TIMEOUT:g}s"
            ) from None
        except Exception as exc:
            detail = redact_url(f"{type(exc).__name__}: {exc}")
            raise InboxError(f"the inbox at {self.store.url} failed: {detail}") from exc
