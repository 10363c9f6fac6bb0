"""Node's amqplib as a foreign producer and consumer, against a real worker: the documented
mapping of every property, headers of every type amqplib writes (its ``{"!": type}`` values
included), follow-up events and dead letters read back by amqplib, and amqplib's classic
mistake, a ``timestamp`` in microseconds, costing only that message."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from eventworker import Context, Event, Reject, handler
from eventworker.settings import Settings
from eventworker.worker.lifecycle import State
from tests.support.broker import Broker, running, wait_for
from tests.support.foreign import amqplib, node_bytes, why_no_amqplib
from tests.support.queues import sink

pytestmark = pytest.mark.skipif(why_no_amqplib() is not None, reason=why_no_amqplib() or "")

H = "x-eventworker-"


async def _publish(settings: Settings, key: str, body: str, **options: Any) -> None:
    answer = await amqplib(
        {
            "op": "publish",
            "url": settings.url.get_secret_value(),
            "exchange": settings.exchange,
            "routingKey": key,
            "body": body,
            "options": options,
        }
    )
    assert answer == {"confirmed": True}


async def _get(settings: Settings, queue: str, count: int = 1) -> list[dict[str, Any]]:
    url = settings.url.get_secret_value()
    taken = await amqplib({"op": "get", "url": url, "queue": queue, "count": count, "timeout": 15})
    assert len(taken) == count, f"amqplib read {len(taken)} of {count} from {queue}"
    return [{**m, "body": base64.b64decode(m["body"])} for m in taken]


async def test_every_property_amqplib_sends_reaches_the_handler_as_documented(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("interop.node.#", name="node_props")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    sent_at = datetime(2026, 12, 1, 8, 30, 15, tzinfo=UTC)
    async with running(broker, [record], settings):
        await _publish(
            settings,
            "interop.node.created",
            json.dumps({"order": "o-1", "total": 12.5}),
            messageId="n-1",
            correlationId="conv-7",
            appId="shop-frontend",
            timestamp=int(sent_at.timestamp()),  # seconds, as AMQP means it
            type="ignored.type",
            contentType="application/json",
            contentEncoding="utf-8",
            persistent=True,
            priority=3,
            headers={"tenant": "acme"},
        )
        await wait_for(lambda: len(seen) == 1)
    [event] = seen
    assert (event.id, event.type, event.source) == ("n-1", "interop.node.created", "shop-frontend")
    assert (event.time, event.correlation_id) == (sent_at, "conv-7")
    assert event.data == {"order": "o-1", "total": 12.5}
    assert event.headers["tenant"] == "acme"
    assert event.attempt == 1


async def test_headers_of_every_type_amqplib_writes_arrive_as_documented(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("interop.node.typed", name="node_types")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = {
        "text": "héllo",
        "raw": {"$bytes": base64.b64encode(b"\x00\xff").decode()},
        "small": 7,
        "big": 2**40,
        "negative": -300,
        "real": 2.5,
        "yes": True,
        "nothing": None,
        "nested": {"a": 1, "b": ["x", 2]},
        "list": [1, "two", 3.5],
        "when": {"!": "timestamp", "value": int(when.timestamp())},
        "money": {"!": "decimal", "value": {"places": 2, "digits": 1234}},
        "int8": {"!": "int8", "value": -5},
        "int16": {"!": "int16", "value": 300},
        "int32": {"!": "int32", "value": 70000},
        "int64": {"!": "int64", "value": 2**33},
        "double": {"!": "double", "value": 0.25},
    }
    async with running(broker, [record], settings):
        await _publish(settings, "interop.node.typed", "{}", headers=headers)
        await wait_for(lambda: len(seen) == 1)
    got = dict(seen[0].headers)
    assert bytes(got.pop("raw")) == b"\x00\xff"  # x arrives as a bytearray
    assert got == {
        "text": "héllo",
        "small": 7,
        "big": 2**40,
        "negative": -300,
        "real": 2.5,
        "yes": True,
        "nothing": None,
        "nested": {"a": 1, "b": ["x", 2]},
        "list": [1, "two", 3.5],
        "when": when,  # T as a UTC datetime
        "money": Decimal("12.34"),
        "int8": -5,
        "int16": 300,
        "int32": 70000,
        "int64": 2**33,
        "double": 0.25,
    }


async def test_a_follow_up_event_is_read_by_an_amqplib_consumer(
    broker: Broker, settings: Settings
) -> None:
    @handler("interop.node.order", name="node_follow")
    async def follow(event: Event[Any], ctx: Context) -> None:
        await ctx.publish("interop.node.shipped", {"order": event.data["order"]})

    async with running(broker, [follow], settings):
        followed = await sink(broker, "interop.node.shipped", "followed")
        await broker.publish(
            "interop.node.order", b'{"order": "o-9"}', message_id="o-9", correlation_id="c-9"
        )
        [message] = await _get(settings, followed)
    properties = message["properties"]
    assert json.loads(message["body"]) == {"order": "o-9"}
    assert properties["contentType"] == "application/json"
    assert properties["correlationId"] == "c-9"  # the conversation goes on
    assert properties["messageId"] and properties["messageId"] != "o-9"
    assert properties["deliveryMode"] == 2
    assert abs(properties["timestamp"] - datetime.now(UTC).timestamp()) < 60  # seconds
    assert properties["headers"][H + "causation-id"] == "o-9"
    assert message["fields"]["routingKey"] == "interop.node.shipped"


async def test_a_dead_letter_is_read_by_an_amqplib_consumer(
    broker: Broker, settings: Settings
) -> None:
    @handler("interop.node.bad", name="node_dead")
    async def refuse(event: Event[Any], ctx: Context) -> None:
        raise Reject("no such customer")

    body = b'{"customer": "nobody"}'
    async with running(broker, [refuse], settings) as worker:
        await broker.publish("interop.node.bad", body, message_id="d-1", headers={"tenant": "x"})
        [message] = await _get(settings, worker.routes[0].dead_letter_queue)
    headers = node_bytes(message["properties"]["headers"])
    assert message["body"] == body  # byte for byte
    assert message["properties"]["messageId"] == "d-1"
    assert headers[H + "reason"] == "rejected"
    assert headers[H + "handler"] == "node_dead"
    assert headers[H + "routing-key"] == "interop.node.bad"
    assert headers[H + "attempt"] == 1
    assert headers[H + "error"] == "no such customer"
    assert headers["tenant"] == "x"


async def test_a_timestamp_in_microseconds_is_dead_lettered_within_a_second_and_costs_nothing_else(
    broker: Broker, settings: Settings
) -> None:
    handled: list[str] = []

    @handler("interop.node.#", name="node_micro")
    async def record(event: Event[Any], ctx: Context) -> None:
        handled.append(event.id)

    async with running(broker, [record], settings) as worker:
        route = worker.routes[0]
        loop = asyncio.get_running_loop()
        sent = loop.time()
        # JavaScript's Date.now() is in milliseconds; a thousand times that is out of any
        # calendar pamqp knows ("year 58893 is out of range").
        await _publish(
            settings,
            "interop.node.micro",
            "{}",
            messageId="micro-1",
            timestamp=1_764_577_815_000_000,
            contentType="application/json",
        )
        await broker.wait_count(route.dead_letter_queue, 1, timeout=5)
        assert loop.time() - sent < 1.0 + 0.5  # within a second of the publish's confirm
        await _publish(settings, "interop.node.after", "{}", messageId="after-1")
        await wait_for(lambda: handled == ["after-1"])
        assert worker.reconnects == 0 and worker.state is State.RUNNING
    [dead] = await _get(settings, route.dead_letter_queue)
    assert dead["properties"]["messageId"] == "micro-1"
    assert dead["properties"]["timestamp"] == 1_764_577_815_000_000  # as the broker holds it
