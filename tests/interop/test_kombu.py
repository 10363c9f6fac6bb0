"""Celery's kombu as a foreign producer and consumer, against a real worker: every property of
docs/wire-format.md mapped, headers of every type kombu writes, follow-up events and dead
letters read back by a kombu consumer. kombu always labels its JSON ``content_encoding:
utf-8``: a charset, not a compression."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import kombu
import orjson

from eventworker import Context, Event, Reject, handler
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.queues import sink

H = "x-eventworker-"


def _publish(url: str, exchange: str, key: str, body: Any, **properties: Any) -> None:
    """Publish as a Celery/kombu application does: the json serializer, confirms on."""
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(
            body,
            exchange=kombu.Exchange(exchange, type="topic", durable=True),
            routing_key=key,
            declare=[],
            **properties,
        )


def _take(url: str, queue: str, count: int, timeout: float = 15) -> list[Any]:
    """Read ``count`` messages from ``queue`` with a kombu consumer (the message objects)."""
    taken: list[Any] = []
    with kombu.Connection(url) as conn:
        simple = conn.SimpleQueue(kombu.Queue(queue, no_declare=True))
        try:
            while len(taken) < count:
                message = simple.get(block=True, timeout=timeout)
                message.ack()
                taken.append(message)
        finally:
            simple.close()
    return taken


async def test_every_property_kombu_sends_reaches_the_handler_as_documented(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("interop.kombu.#", name="kombu_props")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    sent_at = datetime(2026, 12, 1, 8, 30, 15, tzinfo=UTC)
    async with running(broker, [record], settings):
        await asyncio.to_thread(
            _publish,
            settings.url.get_secret_value(),
            settings.exchange,
            "interop.kombu.created",
            {"order": "o-1", "total": 12.5},
            message_id="k-1",
            correlation_id="conv-7",
            app_id="billing-api",
            timestamp=int(sent_at.timestamp()),
            type="ignored.type",
            priority=3,
            headers={"tenant": "acme"},
        )
        await wait_for(lambda: len(seen) == 1)
    [event] = seen
    assert (event.id, event.type, event.source) == ("k-1", "interop.kombu.created", "billing-api")
    assert (event.time, event.correlation_id) == (sent_at, "conv-7")
    assert event.data == {"order": "o-1", "total": 12.5}
    assert event.headers["tenant"] == "acme"
    assert event.attempt == 1


async def test_headers_of_every_type_kombu_writes_arrive_as_documented(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("interop.kombu.typed", name="kombu_types")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = {
        "text": "héllo",
        "raw": b"\x00\xff",
        "small": 7,
        "big": 2**40,
        "negative": -300,
        "real": 2.5,
        "yes": True,
        "money": Decimal("12.34"),
        "when": when,
        "nested": {"a": 1, "b": ["x", 2]},
        "list": [1, "two", 3.0],
        "nothing": None,
    }
    async with running(broker, [record], settings):
        await asyncio.to_thread(
            _publish,
            settings.url.get_secret_value(),
            settings.exchange,
            "interop.kombu.typed",
            {},
            headers=headers,
        )
        await wait_for(lambda: len(seen) == 1)
    got = dict(seen[0].headers)
    assert bytes(got.pop("raw")) == b"\x00\xff"  # x arrives as a bytearray
    assert got.pop("when") == when  # T as a UTC datetime
    assert got == {k: v for k, v in headers.items() if k not in ("raw", "when")}


async def test_a_follow_up_event_is_read_by_a_kombu_consumer(
    broker: Broker, settings: Settings
) -> None:
    @handler("interop.kombu.order", name="kombu_follow")
    async def follow(event: Event[Any], ctx: Context) -> None:
        await ctx.publish("interop.kombu.shipped", {"order": event.data["order"]})

    async with running(broker, [follow], settings):
        followed = await sink(broker, "interop.kombu.shipped", "followed")
        await broker.publish(
            "interop.kombu.order", b'{"order": "o-9"}', message_id="o-9", correlation_id="c-9"
        )
        [message] = await asyncio.to_thread(_take, settings.url.get_secret_value(), followed, 1)
    properties, headers = message.properties, message.headers
    assert message.content_type == "application/json"
    assert orjson.loads(message.body) == {"order": "o-9"}
    assert properties["correlation_id"] == "c-9"  # the conversation goes on
    assert properties["message_id"] and properties["message_id"] != "o-9"
    assert headers[H + "causation-id"] == "o-9"
    assert properties["delivery_mode"] == 2


async def test_a_dead_letter_is_read_by_a_kombu_consumer(
    broker: Broker, settings: Settings
) -> None:
    @handler("interop.kombu.bad", name="kombu_dead")
    async def refuse(event: Event[Any], ctx: Context) -> None:
        raise Reject("no such customer")

    body = b'{"customer": "nobody"}'
    async with running(broker, [refuse], settings) as worker:
        await broker.publish(
            "interop.kombu.bad", body, message_id="d-1", headers={"tenant": "acme"}
        )
        dead = worker.routes[0].dead_letter_queue
        [message] = await asyncio.to_thread(_take, settings.url.get_secret_value(), dead, 1)
    headers = message.headers
    assert message.body == body  # byte for byte
    assert message.properties["message_id"] == "d-1"
    assert headers[H + "reason"] == "rejected"
    assert headers[H + "handler"] == "kombu_dead"
    assert headers[H + "routing-key"] == "interop.kombu.bad"
    assert headers[H + "attempt"] == 1
    assert headers[H + "error"] == "no such customer"
    assert headers["tenant"] == "acme"
