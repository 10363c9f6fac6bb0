"""What happens to one delivery, against the real broker: ack, retry, dead letter."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from eventworker import Context, Event, Reject, Retry, RetryPolicy, handler
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.timing import TTL_EARLY

H = "x-eventworker-"


class Calls:
    """Records every invocation of a test handler: (attempt, monotonic time, event)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, float, Event[Any]]] = []

    def add(self, event: Event[Any]) -> None:
        self.items.append((event.attempt, time.monotonic(), event))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def attempts(self) -> list[int]:
        return [a for a, _, _ in self.items]


async def test_topic_bindings_route_star_and_hash_like_rabbitmq(
    broker: Broker, settings: Settings
) -> None:
    star, hash_ = Calls(), Calls()

    @handler("a.*.c", name="star")
    async def on_star(event: Event[Any], ctx: Context) -> None:
        star.add(event)

    @handler("a.#", name="hash")
    async def on_hash(event: Event[Any], ctx: Context) -> None:
        hash_.add(event)

    async with running(broker, [on_star, on_hash], settings):
        for key in ("a.b.c", "a.b.b.c", "a", "a.x", "b.b.c"):
            await broker.publish(key, b"{}", message_id=key)
        await wait_for(lambda: len(hash_) == 4 and len(star) == 1)
        await asyncio.sleep(0.3)  # nothing else may arrive late
    assert sorted(e.id for _, _, e in star.items) == ["a.b.c"]
    assert sorted(e.id for _, _, e in hash_.items) == ["a", "a.b.b.c", "a.b.c", "a.x"]


async def test_a_handler_that_returns_is_acked_once(broker: Broker, settings: Settings) -> None:
    calls = Calls()

    @handler("ok.event")
    async def ok(event: Event[Any], ctx: Context) -> None:
        calls.add(event)

    async with running(broker, [ok], settings) as worker:
        await broker.publish(
            "ok.event", b'{"n": 1}', message_id="e1", content_type="application/json"
        )
        await wait_for(lambda: len(calls) == 1)
        queue = worker.routes[0].queue
        await wait_for(lambda: worker.in_flight == 0)
    assert calls.items[0][2].data == {"n": 1}
    assert calls.attempts == [1]
    assert await broker.count(queue) == 0
    assert await broker.count(f"{queue}.dead") == 0


async def test_retries_wait_their_delay_and_count_attempts(
    broker: Broker, settings: Settings
) -> None:
    calls = Calls()

    @handler("flaky.event", retry=RetryPolicy(max_attempts=4, delays=(1, 2)))
    async def flaky(event: Event[Any], ctx: Context) -> None:
        calls.add(event)
        if event.attempt < 3:
            raise ConnectionError("not yet")

    async with running(broker, [flaky], settings):
        await broker.publish("flaky.event", b"{}", message_id="f1")
        await wait_for(lambda: len(calls) == 3, timeout=20)
    assert calls.attempts == [1, 2, 3]
    times = [t for _, t, _ in calls.items]
    assert 1.0 - TTL_EARLY <= times[1] - times[0] < 3.0
    assert 2.0 - TTL_EARLY <= times[2] - times[1] < 4.0
    assert {e.id for _, _, e in calls.items} == {"f1"}
    assert calls.items[2][2].type == "flaky.event"  # the original routing key, not the tier's


async def test_a_retry_comes_back_to_the_failing_handler_only(
    broker: Broker, settings: Settings
) -> None:
    failing, other = Calls(), Calls()

    @handler("shared.key", retry=RetryPolicy(max_attempts=3, delays=(1,)))
    async def fails_once(event: Event[Any], ctx: Context) -> None:
        failing.add(event)
        if event.attempt == 1:
            raise RuntimeError("first attempt fails")

    @handler("shared.key")
    async def bystander(event: Event[Any], ctx: Context) -> None:
        other.add(event)

    async with running(broker, [fails_once, bystander], settings):
        await broker.publish("shared.key", b"{}", message_id="s1")
        await wait_for(lambda: len(failing) == 2, timeout=15)
        await asyncio.sleep(1.5)  # a wrongly routed retry copy would have arrived by now
    assert failing.attempts == [1, 2]
    assert other.attempts == [1]


async def test_spent_messages_are_dead_lettered_byte_for_byte_with_their_diagnosis(
    broker: Broker, settings: Settings
) -> None:
    calls = Calls()

    @handler("doomed.event", retry=RetryPolicy(max_attempts=2, delays=(1,)))
    async def doomed(event: Event[Any], ctx: Context) -> None:
        calls.add(event)
        raise ValueError("cannot ever work\nsecond line")

    body = b'{"b": 2,  "a": 1}'  # odd spacing: the dead-letter copy must not be re-encoded
    async with running(broker, [doomed], settings) as worker:
        await broker.publish(
            "doomed.event",
            body,
            message_id="d1",
            correlation_id="c-9",
            headers={"tenant": "acme", "CC": ["spy"]},
        )
        dead_lettered = await broker.take_all(worker.routes[0].dead_letter_queue, expect=1)
    assert calls.attempts == [1, 2]
    assert len(dead_lettered) == 1
    copy = dead_lettered[0]
    headers = copy.headers
    assert hashlib.sha256(copy.body).digest() == hashlib.sha256(body).digest()
    assert copy.message_id == "d1"
    assert copy.correlation_id == "c-9"
    assert headers["tenant"] == "acme"
    assert headers[H + "reason"] == "exception"
    assert headers[H + "exception"] == "ValueError"
    assert headers[H + "error"] == "cannot ever work\nsecond line"
    assert "ValueError" in str(headers[H + "traceback"])
    assert headers[H + "attempt"] == 2
    assert headers[H + "handler"] == "doomed"
    assert headers[H + "routing-key"] == "doomed.event"
    assert str(headers[H + "first-failure"]) <= str(headers[H + "last-failure"])
    assert headers[H + "first-failure"] != headers[H + "last-failure"]
    for gone in ("x-death", "CC", "eventworker-return-to"):
        assert gone not in headers


async def test_invalid_json_and_model_failures_are_dead_lettered_at_once(
    broker: Broker, settings: Settings
) -> None:
    calls = Calls()

    class Order(BaseModel):
        order_id: str
        total: float

    @handler("orders.created", model=Order)
    async def bill(event: Event[Order], ctx: Context) -> None:
        calls.add(event)

    bad = {
        "not-json": b"not json",
        "nan": b'{"order_id": "x", "total": NaN}',
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "scalar": b"42",
        "missing": b'{"order_id": "x"}',
        "canary": b'{"order_id": "x", "total": "s3cr3t-canary-9f1c"}',
    }
    async with running(broker, [bill], settings) as worker:
        for key, body in bad.items():
            await broker.publish("orders.created", body, message_id=key)
        await broker.publish(
            "orders.created", b'{"order_id": "ok", "total": 1.5}', message_id="good"
        )
        dead_lettered = await broker.take_all(worker.routes[0].dead_letter_queue, expect=len(bad))
        await wait_for(lambda: len(calls) == 1)
    reasons = {m.message_id: m.headers[H + "reason"] for m in dead_lettered}
    assert reasons == {
        "not-json": "decode_error",
        "nan": "decode_error",
        "deep": "decode_error",
        "scalar": "schema_error",
        "missing": "schema_error",
        "canary": "schema_error",
    }
    assert all(m.headers[H + "attempt"] == 1 for m in dead_lettered)
    assert {m.message_id: m.body for m in dead_lettered} == bad
    assert "total" in str(dead_lettered[-1].headers[H + "error"])
    assert all("s3cr3t-canary" not in str(m.headers) for m in dead_lettered)
    assert calls.items[0][2].data == Order(order_id="ok", total=1.5)


async def test_unsupported_content_and_oversize_bodies_are_dead_lettered(
    broker: Broker, settings: Settings
) -> None:
    @handler("any.thing")
    async def anything(event: Event[Any], ctx: Context) -> None:
        pass

    small = settings.model_copy(update={"max_body_bytes": 64})
    async with running(broker, [anything], small) as worker:
        await broker.publish("any.thing", b"x" * 65, message_id="big")
        await broker.publish(
            "any.thing", b"{}", message_id="pickle", content_type="application/x-python-serialize"
        )
        await broker.publish("any.thing", b"{}", message_id="gzip", content_encoding="gzip")
        dead_lettered = await broker.take_all(worker.routes[0].dead_letter_queue, expect=3)
    reasons = {m.message_id: m.headers[H + "reason"] for m in dead_lettered}
    assert reasons == {
        "big": "too_large",
        "pickle": "unsupported_content_type",
        "gzip": "unsupported_content_type",
    }


async def test_reject_dead_letters_at_once_and_retry_signal_asks_for_another_attempt(
    broker: Broker, settings: Settings
) -> None:
    rejected, retried = Calls(), Calls()

    @handler("sig.reject")
    async def rejecting(event: Event[Any], ctx: Context) -> None:
        rejected.add(event)
        raise Reject("negative total")

    @handler("sig.retry", retry=RetryPolicy(max_attempts=2, delays=(30,)))
    async def retrying(event: Event[Any], ctx: Context) -> None:
        retried.add(event)
        raise Retry(delay=1)

    async with running(broker, [rejecting, retrying], settings) as worker:
        await broker.publish("sig.reject", b"{}", message_id="r1")
        await broker.publish("sig.retry", b"{}", message_id="r2")
        dead_lettered_reject = await broker.take_all(worker.routes[0].dead_letter_queue, expect=1)
        # Retry(delay=1) uses the 1 s tier (declared for the default policy), not the 30 s one.
        dead_lettered_retry = await broker.take_all(
            worker.routes[1].dead_letter_queue, expect=1, timeout=10
        )
    assert rejected.attempts == [1]
    assert dead_lettered_reject[0].headers[H + "reason"] == "rejected"
    assert dead_lettered_reject[0].headers[H + "error"] == "negative total"
    assert retried.attempts == [1, 2]
    assert retried.items[1][1] - retried.items[0][1] < 5
    assert dead_lettered_retry[0].headers[H + "reason"] == "retry_requested"


async def test_a_timed_out_handler_counts_as_a_failure(broker: Broker, settings: Settings) -> None:
    calls = Calls()

    @handler("slow.event", timeout=0.3, retry=RetryPolicy(max_attempts=2, delays=(1,)))
    async def slow(event: Event[Any], ctx: Context) -> None:
        calls.add(event)
        await asyncio.sleep(30)

    async with running(broker, [slow], settings) as worker:
        await broker.publish("slow.event", b"{}", message_id="t1")
        dead_lettered = await broker.take_all(worker.routes[0].dead_letter_queue, expect=1)
    assert calls.attempts == [1, 2]
    assert dead_lettered[0].headers[H + "reason"] == "timeout"
    assert dead_lettered[0].headers[H + "exception"] == "HandlerTimeoutError"


async def test_sync_handlers_run_in_a_thread_and_can_publish(
    broker: Broker, settings: Settings
) -> None:
    threads: list[str] = []
    followed = Calls()

    @handler("sync.event")
    def blocking(event: Event[Any], ctx: Context) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.2)  # would stall every other handler if it ran on the event loop
        ctx.publish_blocking("sync.followup", {"from": event.id})

    @handler("sync.followup")
    async def follow(event: Event[Any], ctx: Context) -> None:
        followed.add(event)

    async with running(broker, [blocking, follow], settings):
        await broker.publish("sync.event", b"{}", message_id="s1")
        await wait_for(lambda: len(followed) == 1)
    assert threads and threads[0] != threading.main_thread().name
    assert followed.items[0][2].data == {"from": "s1"}
    assert followed.items[0][2].causation_id == "s1"


async def test_follow_up_events_carry_correlation_and_causation(
    broker: Broker, settings: Settings
) -> None:
    seen = Calls()

    @handler("chain.start")
    async def start(event: Event[Any], ctx: Context) -> None:
        await ctx.publish("chain.next", {"step": 2}, headers={"tenant": "acme"})

    @handler("chain.next")
    async def step(event: Event[Any], ctx: Context) -> None:
        seen.add(event)

    async with running(broker, [start, step], settings):
        await broker.publish("chain.start", b"{}", message_id="root", correlation_id="corr-1")
        await wait_for(lambda: len(seen) == 1)
    event = seen.items[0][2]
    assert event.correlation_id == "corr-1"
    assert event.causation_id == "root"
    assert event.headers["tenant"] == "acme"
    assert event.id != "root"


async def test_a_plain_aio_pika_publisher_is_understood(broker: Broker, settings: Settings) -> None:
    """No message_id, no content type, no timestamp: what another language's client sends."""
    seen = Calls()

    @handler("interop.#")
    async def interop(event: Event[Any], ctx: Context) -> None:
        seen.add(event)

    async with running(broker, [interop], settings):
        await broker.publish("interop.hello", orjson.dumps({"x": [1, 2]}))
        await wait_for(lambda: len(seen) == 1)
    event = seen.items[0][2]
    assert event.data == {"x": [1, 2]}
    assert event.type == "interop.hello"
    assert event.id and event.correlation_id == event.id
    assert event.attempt == 1


async def test_forged_attempt_headers_and_cc_do_not_leak_into_retries(
    broker: Broker, settings: Settings
) -> None:
    calls = Calls()

    @handler("forged.event", retry=RetryPolicy(max_attempts=3, delays=(1,)))
    async def fails_once(event: Event[Any], ctx: Context) -> None:
        calls.add(event)
        if event.attempt == 1:
            raise RuntimeError("once")

    async with running(broker, [fails_once], settings) as worker:
        spy = await (await broker.connection.channel()).declare_queue(exclusive=True)
        await spy.bind(settings.exchange, "audit.all")
        await broker.publish(
            "forged.event",
            b"{}",
            message_id="f1",
            headers={H + "attempt": 999, "CC": ["audit.all"], "x-death": [{"junk": True}]},
        )
        await wait_for(lambda: len(calls) == 2)
        spied = await broker.take_all(spy.name, expect=1, timeout=1)
        assert await broker.count(worker.routes[0].dead_letter_queue) == 0
    assert calls.attempts == [1, 2]
    assert len(spied) == 1  # the producer's own CC copy; the retry copy added none
    retried = calls.items[1][2].headers
    assert "CC" not in retried
    # x-death now holds only the broker's record of the retry tier, not the forged entry.
    assert all("junk" not in death for death in retried["x-death"])


class Recorder:
    """An Observer that records what it sees."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.outcomes: list[tuple[str, str, bool]] = []
        self.publishes: list[tuple[str, str]] = []

    def received(self, route: Any, event: Event[Any]) -> None:
        self.seen.append(event.id)

    def settled(
        self, route: Any, event: Event[Any], decision: Any, *, moved: bool, seconds: float
    ) -> None:
        assert seconds >= 0
        self.outcomes.append((event.id, type(decision).__name__, moved))

    def published(self, route: Any, *, kind: str, status: str) -> None:
        self.publishes.append((kind, status))


async def test_observers_see_every_delivery_and_how_it_was_settled(
    broker: Broker, settings: Settings
) -> None:
    recorder = Recorder()

    @handler("obs.event", retry=RetryPolicy(max_attempts=2, delays=(1,)))
    async def observed(event: Event[Any], ctx: Context) -> None:
        if event.id == "bad":
            raise RuntimeError("fails")

    async with running(broker, [observed], settings, observers=[recorder]):
        await broker.publish("obs.event", b"{}", message_id="good")
        await broker.publish("obs.event", b"{}", message_id="bad")
        await broker.publish("obs.event", b"nope", message_id="junk")
        await wait_for(lambda: len(recorder.outcomes) == 4, timeout=15)
    assert sorted(recorder.seen) == ["bad", "bad", "good", "junk"]
    assert sorted(recorder.outcomes) == [
        ("bad", "DeadLetter", True),
        ("bad", "RetryIn", True),
        ("good", "Ack", True),
        ("junk", "DeadLetter", True),
    ]
    assert sorted(recorder.publishes) == [
        ("dead_letter", "confirmed"),
        ("dead_letter", "confirmed"),
        ("retry", "confirmed"),
    ]


@pytest.mark.parametrize(
    "deaths",
    [
        None,
        [{"queue": "elsewhere", "reason": "expired", "count": 1, "exchange": ""}],
        [{"queue": "{tier}", "reason": "rejected", "count": 1, "exchange": ""}],
    ],
    ids=["no-x-death", "x-death-of-another-queue", "x-death-not-expired"],
)
async def test_an_attempt_header_sent_straight_to_the_return_exchange_counts_for_nothing(
    broker: Broker, settings: Settings, deaths: list[dict[str, Any]] | None
) -> None:
    # Only a copy our own retry tier dead-lettered (its x-death says so) keeps its attempt: a
    # producer allowed to publish to <exchange>.return cannot dead-letter an event early.
    calls = Calls()

    @handler("returned.event", retry=RetryPolicy(max_attempts=3, delays=(1,)))
    async def fails(event: Event[Any], ctx: Context) -> None:
        calls.add(event)
        if event.id == "genuine" or [e.id for _, _, e in calls.items].count(event.id) == 1:
            raise RuntimeError("fails")

    async with running(broker, [fails], settings) as worker:
        route = worker.routes[0]
        [tier] = route.retry_queues.values()
        headers: dict[str, Any] = {
            H + "attempt": 3,
            H + "routing-key": "returned.event",
            "eventworker-return-to": route.queue,
        }
        if deaths is not None:
            headers["x-death"] = [{**d, "queue": d["queue"].format(tier=tier)} for d in deaths]
        await broker.publish(
            "returned.event",
            b"{}",
            exchange=f"{settings.exchange}.return",
            message_id="forged",
            headers=headers,
        )
        # A genuine retry still counts: three failed attempts, then the dead-letter queue.
        await broker.publish("returned.event", b"{}", message_id="genuine")
        dead_lettered = await broker.take_all(route.dead_letter_queue, expect=1, timeout=20)
        await wait_for(lambda: [e.id for _, _, e in calls.items].count("forged") == 2)
        assert await broker.count(route.dead_letter_queue) == 0
    by_id: dict[str, list[int]] = {}
    for attempt, _, event in calls.items:
        by_id.setdefault(event.id, []).append(attempt)
    assert by_id == {"forged": [1, 2], "genuine": [1, 2, 3]}
    assert [m.message_id for m in dead_lettered] == ["genuine"]
    assert dead_lettered[0].headers[H + "attempt"] == 3
