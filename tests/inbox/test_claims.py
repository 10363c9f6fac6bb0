"""The inbox around a handler: waiting for another holder, taking over, renewing, completing,
releasing; on the in-memory store (every store meets the same contract: test_inbox_stores)."""

from __future__ import annotations

import asyncio
import time

import pytest

from eventworker.errors import IdempotencyConflictError, InboxError
from eventworker.inbox.claims import Claim, Inbox
from eventworker.inbox.protocol import AlreadyHandled, Key, NotAdmitted, body_hash
from eventworker.inbox.stores.memory import MemoryInboxStore

K = Key("h", "e1")


def inbox(store: MemoryInboxStore | None = None, *, lease: float = 5.0, wait: float = 5.0) -> Inbox:
    return Inbox(store or MemoryInboxStore(), lease=lease, wait=wait, retention=3600)


class FailingStore(MemoryInboxStore):
    """A store whose claims fail, as an unreachable database would."""

    async def claim(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise InboxError("the inbox at memory:// is down")


def test_the_body_hash_is_the_sha256_of_the_raw_body() -> None:
    assert body_hash(b"{}") == ("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")


async def test_admit_claims_a_new_event() -> None:
    admitted = await inbox().admit(K, b"{}")
    assert isinstance(admitted, Claim)
    assert admitted.key == K


async def test_a_copy_waits_for_the_holder_and_is_a_duplicate_once_it_completes() -> None:
    box = inbox()
    first = await box.admit(K, b"{}")
    assert isinstance(first, Claim)
    second = asyncio.create_task(box.admit(K, b"{}"))
    await asyncio.sleep(0.2)
    assert not second.done(), "the copy must wait while the first is being handled"
    await box.complete(first)
    assert await asyncio.wait_for(second, 2) == AlreadyHandled()


async def test_a_copy_waits_for_a_released_claim_and_then_runs() -> None:
    box = inbox()
    first = await box.admit(K, b"{}")
    assert isinstance(first, Claim)
    second = asyncio.create_task(box.admit(K, b"{}"))
    await asyncio.sleep(0.1)
    await box.release(first)
    assert isinstance(await asyncio.wait_for(second, 2), Claim)


async def test_a_dead_holders_claim_is_taken_over_when_its_lease_runs_out() -> None:
    store = MemoryInboxStore()
    dead = inbox(store, lease=0.5)
    assert isinstance(await dead.admit(K, b"{}"), Claim)  # and never completes: it died
    started = time.monotonic()
    taken = await inbox(store, lease=0.5).admit(K, b"{}")
    assert isinstance(taken, Claim)
    assert 0.3 < time.monotonic() - started < 1.5


async def test_a_claim_held_longer_than_the_wait_is_requeued() -> None:
    store = MemoryInboxStore()
    assert isinstance(await inbox(store).admit(K, b"{}"), Claim)
    started = time.monotonic()
    assert await inbox(store, wait=0.3).admit(K, b"{}") == NotAdmitted("claim_held")
    assert 0.25 < time.monotonic() - started < 1.0


async def test_a_failing_store_requeues_after_the_wait() -> None:
    assert await inbox(FailingStore(), wait=0.2).admit(K, b"{}") == NotAdmitted("inbox_unavailable")


async def test_an_unexpected_error_of_a_store_counts_as_the_store_failing() -> None:
    class Buggy(MemoryInboxStore):
        async def claim(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise KeyError("a driver bug")

    assert await inbox(Buggy(), wait=0.1).admit(K, b"{}") == NotAdmitted("inbox_unavailable")


async def test_the_same_id_with_another_body_is_a_conflict_naming_both_hashes() -> None:
    box = inbox()
    await box.admit(K, b'{"a": 1}')
    conflict = await box.admit(K, b'{"a": 2}')
    assert isinstance(conflict, IdempotencyConflictError)
    assert (conflict.event_id, conflict.handler) == ("e1", "h")
    assert body_hash(b'{"a": 1}')[:16] in str(conflict)
    assert body_hash(b'{"a": 2}')[:16] in str(conflict)


async def test_holding_renews_the_lease_so_a_slow_handler_keeps_its_claim() -> None:
    store = MemoryInboxStore()
    box = inbox(store, lease=0.3)
    claim = await box.admit(K, b"{}")
    assert isinstance(claim, Claim)
    async with box.holding(claim):
        await asyncio.sleep(1.0)  # over three leases
        assert await inbox(store, wait=0.05).admit(K, b"{}") == NotAdmitted("claim_held")
    await box.complete(claim)
    assert await inbox(store).admit(K, b"{}") == AlreadyHandled()


async def test_a_transaction_needs_the_postgresql_store() -> None:
    box = inbox()
    claim = await box.admit(K, b"{}")
    assert isinstance(claim, Claim)
    with pytest.raises(InboxError, match="needs the PostgreSQL inbox"):
        box.transaction(claim)


async def test_a_done_mark_that_cannot_be_written_is_logged_not_raised() -> None:
    class Unwritable(MemoryInboxStore):
        async def complete(self, key: Key, *, token: str) -> bool:
            raise InboxError("read-only")

    box = inbox(Unwritable(), wait=0.2)
    claim = await box.admit(K, b"{}")
    assert isinstance(claim, Claim)
    await box.complete(claim)  # gives up after the wait, without raising


async def test_a_started_inbox_removes_entries_older_than_the_retention_by_itself() -> None:
    store = MemoryInboxStore()
    box = Inbox(store, lease=5, wait=5, retention=0.2, cleanup_interval=0.05)
    await box.start()
    try:
        claim = await box.admit(K, b"{}")
        assert isinstance(claim, Claim)
        await box.complete(claim)
        assert [s.completed for s in await store.stats()] == [1]
        deadline = time.monotonic() + 5
        while await store.stats():
            assert time.monotonic() < deadline, "the done entry was never cleaned up"
            await asyncio.sleep(0.05)
        assert isinstance(await box.admit(K, b"{}"), Claim), "gone: a late duplicate runs again"
    finally:
        await box.close()
