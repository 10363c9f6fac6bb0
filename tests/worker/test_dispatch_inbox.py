"""Idempotent handlers on the real broker: duplicates acked unrun, conflicting bodies
dead-lettered, failures released for the retry, claims held elsewhere waited for."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.errors import InboxError
from eventworker.inbox.protocol import Claimed, Key, body_hash
from eventworker.inbox.stores.memory import MemoryInboxStore
from eventworker.settings import InboxSettings, Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.inbox_worker import Decisions

H = "x-eventworker-"


def with_inbox(settings: Settings, **inbox: Any) -> Settings:
    return settings.model_copy(
        update={"inbox": InboxSettings.model_validate({"url": "memory://", **inbox})}
    )


async def test_duplicates_of_a_handled_event_are_acked_without_running_and_observed(
    broker: Broker, settings: Settings
) -> None:
    calls: list[str] = []
    seen = Decisions()

    @handler("idem.event", idempotent=True)
    async def once(event: Event[Any], ctx: Context) -> None:
        calls.append(event.id)

    async with running(broker, [once], with_inbox(settings), observers=[seen]) as worker:
        for _ in range(3):
            await broker.publish("idem.event", b'{"n": 1}', message_id="e1")
        await broker.publish("idem.event", b'{"n": 2}', message_id="e2")
        await wait_for(lambda: sum(seen.counts.values()) == 4)
        queue = worker.routes[0].queue
    assert sorted(calls) == ["e1", "e2"]
    assert seen.counts == {"Ack": 2, "Duplicate": 2}
    assert await broker.count(queue) == 0
    assert await broker.count(f"{queue}.dead") == 0


async def test_the_same_id_with_another_body_is_dead_lettered_as_a_conflict(
    broker: Broker, settings: Settings
) -> None:
    calls: list[Any] = []

    @handler("idem.conflict", idempotent=True)
    async def once(event: Event[Any], ctx: Context) -> None:
        calls.append(event.data)

    async with running(broker, [once], with_inbox(settings)) as worker:
        await broker.publish("idem.conflict", b'{"v": "a"}', message_id="c1")
        await wait_for(lambda: len(calls) == 1)
        await broker.publish("idem.conflict", b'{"v": "b"}', message_id="c1")
        dead = await broker.take_all(f"{worker.routes[0].queue}.dead", expect=1)
    assert calls == [{"v": "a"}]
    assert [m.body for m in dead] == [b'{"v": "b"}']
    headers = dead[0].headers or {}
    assert headers[f"{H}reason"] == "idempotency_key_conflict"
    assert headers[f"{H}exception"] == "IdempotencyConflictError"
    assert "sha256" in str(headers[f"{H}error"])


async def test_a_failed_attempt_releases_the_claim_so_the_retry_runs(
    broker: Broker, settings: Settings
) -> None:
    attempts: list[int] = []

    @handler("idem.flaky", idempotent=True, retry=RetryPolicy(max_attempts=3, delays=(0.2,)))
    async def flaky(event: Event[Any], ctx: Context) -> None:
        attempts.append(event.attempt)
        if event.attempt == 1:
            raise RuntimeError("transient")

    store = MemoryInboxStore()
    seen = Decisions()
    async with running(broker, [flaky], with_inbox(settings), inbox_store=store, observers=[seen]):
        await broker.publish("idem.flaky", b"{}", message_id="f1")
        await wait_for(lambda: seen.counts["Ack"] == 1)
    assert attempts == [1, 2]
    stats = await store.stats()
    assert [(s.handler, s.completed, s.in_progress) for s in stats] == [("flaky", 1, 0)]


async def test_a_copy_of_an_event_in_progress_waits_and_is_then_skipped(
    broker: Broker, settings: Settings
) -> None:
    calls: list[str] = []
    release = asyncio.Event()
    seen = Decisions()

    @handler("idem.slow", idempotent=True, concurrency=2)
    async def slow(event: Event[Any], ctx: Context) -> None:
        calls.append(event.id)
        await release.wait()

    async with running(broker, [slow], with_inbox(settings), observers=[seen]):
        await broker.publish("idem.slow", b"{}", message_id="s1")
        await wait_for(lambda: calls == ["s1"])
        await broker.publish("idem.slow", b"{}", message_id="s1")
        await asyncio.sleep(0.3)
        assert not seen.counts, "the copy waits while the first is handled"
        release.set()
        await wait_for(lambda: sum(seen.counts.values()) == 2)
    assert calls == ["s1"]
    assert seen.counts == {"Ack": 1, "Duplicate": 1}


async def test_a_copy_held_elsewhere_longer_than_the_wait_goes_back_to_its_queue(
    broker: Broker, settings: Settings
) -> None:
    calls: list[str] = []
    release = asyncio.Event()
    seen = Decisions()

    @handler("idem.held", idempotent=True, concurrency=2)
    async def held(event: Event[Any], ctx: Context) -> None:
        calls.append(event.id)
        await release.wait()

    async with running(broker, [held], with_inbox(settings, wait=0.2), observers=[seen]):
        await broker.publish("idem.held", b"{}", message_id="r1")
        await wait_for(lambda: calls == ["r1"])
        await broker.publish("idem.held", b"{}", message_id="r1")
        await wait_for(lambda: seen.counts["Requeue"] >= 2)
        release.set()
        await wait_for(lambda: seen.counts["Duplicate"] == 1)
    assert calls == ["r1"]
    assert seen.counts["Ack"] == 1


async def test_a_dead_workers_claim_is_taken_over_after_its_lease(
    broker: Broker, settings: Settings
) -> None:
    calls: list[str] = []

    @handler("idem.orphan", idempotent=True)
    async def orphan(event: Event[Any], ctx: Context) -> None:
        calls.append(event.id)

    store = MemoryInboxStore()
    # A worker that died right after claiming: its claim runs out after 0.5 s.
    await store.claim(
        Key("orphan", "o1"), body_hash=body_hash(b"{}"), owner="dead:1", token="x", lease=0.5
    )
    async with running(broker, [orphan], with_inbox(settings), inbox_store=store):
        await broker.publish("idem.orphan", b"{}", message_id="o1")
        await wait_for(lambda: calls == ["o1"], timeout=5)


async def test_the_settings_default_makes_handlers_idempotent_unless_they_opt_out(
    broker: Broker, settings: Settings
) -> None:
    calls: collections.Counter[str] = collections.Counter()
    seen = Decisions()

    @handler("idem.default")
    async def default(event: Event[Any], ctx: Context) -> None:
        calls["default"] += 1

    @handler("idem.default", idempotent=False)
    async def opted_out(event: Event[Any], ctx: Context) -> None:
        calls["opted_out"] += 1

    s = with_inbox(settings, idempotent=True)
    async with running(broker, [default, opted_out], s, observers=[seen]) as worker:
        assert {r.handler.name: r.idempotent for r in worker.routes} == {
            "default": True,
            "opted_out": False,
        }
        for _ in range(2):
            await broker.publish("idem.default", b"{}", message_id="d1")
        await wait_for(lambda: sum(seen.counts.values()) == 4)
    assert calls == {"default": 1, "opted_out": 2}


async def test_without_a_store_the_message_goes_back_to_its_queue_not_lost(
    broker: Broker, settings: Settings
) -> None:
    class Down(MemoryInboxStore):
        async def claim(self, *args: object, **kwargs: object) -> Claimed:  # type: ignore[override]
            raise InboxError("the inbox is down")

    seen = Decisions()

    @handler("idem.down", idempotent=True)
    async def never(event: Event[Any], ctx: Context) -> None:
        raise AssertionError("must not run without its claim")

    async with running(
        broker, [never], with_inbox(settings, wait=0.1), inbox_store=Down(), observers=[seen]
    ) as worker:
        await broker.publish("idem.down", b"{}", message_id="u1")
        await wait_for(lambda: seen.counts["Requeue"] >= 2)
        queue = worker.routes[0].queue
    await broker.wait_count(queue, 1)  # handed back as the worker's connection closed
    assert await broker.count(f"{queue}.dead") == 0
