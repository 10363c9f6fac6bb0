"""Topic matching, checked against the real broker's topic exchange, and what dispatch does with
a delivery no binding key of its handler matches (reason ``no_handler``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aio_pika
import pytest

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from eventworker.topology.topic import compile_bindings
from tests.support.broker import Broker, running, wait_for

H = "x-eventworker-"

PATTERNS = [
    "#",
    "*",
    "a",
    "a.#",
    "#.a",
    "a.*",
    "*.a",
    "a.#.b",
    "#.a.#",
    "*.#",
    "#.*",
    "a.*.#",
    "#.#",
    "a..b",
    "a.*.b",
    "*.*",
    "a.#.#.b",
]
KEYS = ["", "a", "b", "a.b", "b.a", "a.a", "a.x.b", "a.b.c", "a..b", "x.a.y", "a.b.b", ".a", "a."]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("orders.created", "orders.created", True),
        ("orders.created", "orders.refunded", False),
        ("orders.*.created", "orders.eu.created", True),
        ("orders.*.created", "orders.created", False),
        ("orders.#", "orders", True),
        ("orders.#", "orders.a.b.c", True),
        ("orders.#", "order", False),
        ("#.created", "created", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("#", "", True),
        ("*", "", False),
    ],
)
def test_a_binding_key_matches_like_a_topic_exchange(
    pattern: str, key: str, expected: bool
) -> None:
    assert compile_bindings([pattern]).matches(key) is expected


def test_any_of_several_binding_keys_may_match() -> None:
    bindings = compile_bindings(["orders.created", "orders.*.created"])
    assert bindings.matches("orders.created")
    assert bindings.matches("orders.eu.created")
    assert not bindings.matches("orders.refunded")
    assert bindings.keys == ("orders.created", "orders.*.created")


def test_many_hashes_against_a_long_key_take_no_exponential_time() -> None:
    bindings = compile_bindings(["#.#.#.#.#.#.x"])
    key = ".".join(["w"] * 120)
    started = time.perf_counter()
    assert not bindings.matches(key)
    assert time.perf_counter() - started < 0.5


async def test_the_matcher_agrees_with_the_broker_on_every_pattern_and_key(
    broker: Broker, settings: Settings
) -> None:
    channel = await broker.connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        f"{settings.queue_prefix}grid", aio_pika.ExchangeType.TOPIC, auto_delete=True
    )
    queues = {}
    for pattern in PATTERNS:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, pattern)
        queues[pattern] = queue
    for key in KEYS:
        await exchange.publish(aio_pika.Message(key.encode()), key)  # confirmed: routed by now
    disagreements = []
    for pattern, queue in queues.items():
        routed = set()
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            routed.add(message.body.decode())
        ours = {key for key in KEYS if compile_bindings([pattern]).matches(key)}
        if ours != routed:
            disagreements.append((pattern, sorted(routed), sorted(ours)))
    await channel.close()
    assert disagreements == []


async def test_a_delivery_over_a_stale_binding_is_dead_lettered_as_no_handler(
    broker: Broker, settings: Settings
) -> None:
    seen: list[str] = []

    @handler("orders.created", name="orders")
    async def orders(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    async with running(broker, [orders], settings) as worker:
        route = worker.routes[0]
        # The binding an earlier version of the handler had, left on the broker.
        channel = await broker.connection.channel()
        queue = await channel.get_queue(route.queue, ensure=False)
        await queue.bind(settings.exchange, "orders.#")
        await channel.close()
        await broker.publish("orders.refunded", b'{"n": 1}', message_id="stale")
        await broker.publish("orders.created", b'{"n": 2}', message_id="fresh")
        dead_lettered = await broker.take_all(route.dead_letter_queue, expect=1)
        await wait_for(lambda: seen == ["fresh"])
        await wait_for(lambda: worker.in_flight == 0)
        await asyncio.sleep(0.2)
        assert await broker.count(route.queue) == 0  # nothing stuck, nothing requeued
    [copy] = dead_lettered
    assert copy.message_id == "stale"
    assert copy.body == b'{"n": 1}'
    assert copy.headers[H + "reason"] == "no_handler"
    assert copy.headers[H + "attempt"] == 1
    assert copy.headers[H + "routing-key"] == "orders.refunded"
    assert "orders.refunded" in str(copy.headers[H + "error"])


async def test_a_message_put_into_the_work_queue_by_name_is_dead_lettered_as_no_handler(
    broker: Broker, settings: Settings
) -> None:
    @handler("named.event")
    async def named(event: Event[Any], ctx: Context) -> None:
        raise AssertionError("must not run")

    async with running(broker, [named], settings) as worker:
        route = worker.routes[0]
        channel = await broker.connection.channel(publisher_confirms=True)
        message = aio_pika.Message(b"{}", message_id=str(uuid.uuid4()))
        await channel.default_exchange.publish(message, route.queue)
        await channel.close()
        [copy] = await broker.take_all(route.dead_letter_queue, expect=1)
    assert copy.headers[H + "reason"] == "no_handler"
