"""Dead-letter queues filled for a test: the messages, their ids, the handler's queues."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from eventworker.deadletters.operations import DeadLetterQueue
from eventworker.handlers import handler
from eventworker.settings import Settings
from eventworker.topology import layout
from tests.support.broker import Broker

PRODUCED = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
#: Publishes in flight while filling a dead-letter queue.
FILL_WINDOW = 500


async def declare(broker: Broker, settings: Settings) -> DeadLetterQueue:
    """The handler's topology, declared as a worker would, and its DeadLetterQueue."""
    worker = await broker.declare(target, settings=settings)
    route = worker.routes[0]
    return DeadLetterQueue(
        "target",
        route.dead_letter_queue,
        layout.return_exchange(settings.exchange),
        route.queue,
        queue_type=settings.queue_type,
    )


async def fill_dead_letters(broker: Broker, queue: str, ids: list[str], **headers: Any) -> None:
    """Put copies into ``queue`` the way dispatch dead-letters them (confirmed), in order: up
    to a few hundred publishes in flight on one channel, which keeps their order."""
    channel = await broker.connection.channel(publisher_confirms=True)
    raw = await channel.get_underlay_channel()
    for start in range(0, len(ids), FILL_WINDOW):
        await asyncio.gather(
            *(
                raw.basic_publish(
                    orjson.dumps({"n": n}),
                    routing_key=queue,
                    properties=_dead_letter(n, ids[n], headers).properties,
                )
                for n in range(start, min(start + FILL_WINDOW, len(ids)))
            )
        )
    await channel.close()


def _dead_letter(n: int, event_id: str, headers: dict[str, Any]) -> aio_pika.Message:
    reason = "exception" if n % 2 else "schema_error"
    return aio_pika.Message(
        b"",
        message_id=event_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=PRODUCED,
        headers={
            H + "routing-key": "dlq.event",
            H + "reason": reason,
            H + "attempt": 3,
            H + "last-failure": "2026-01-01T00:00:00.000+00:00",
            "tenant": "acme",
            **headers,
        },
    )


async def ids_in(broker: Broker, queue: str) -> list[str]:
    return [m.message_id or "" for m in await broker.take_all(queue)]


async def drain_ids(broker: Broker, queue: str) -> list[str]:
    """The ids of every message ``queue`` holds, in order, taking them (see :func:`drain`)."""
    return [m.message_id or "" for m in await drain(broker, queue)]


async def drain(broker: Broker, queue: str) -> list[AbstractIncomingMessage]:
    """Every message ``queue`` holds, in order, taking them: a consumer without acks
    (``ids_in`` reads one round trip per message)."""
    channel = await broker.connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        left = declared.declaration_result.message_count or 0
        taken: list[AbstractIncomingMessage] = []
        if not left:
            return taken
        async with declared.iterator(no_ack=True) as messages:
            async for message in messages:
                taken.append(message)
                if len(taken) == left:
                    break
        return taken
    finally:
        await channel.close()


IDS = [f"m{n}" for n in range(10)]

H = "x-eventworker-"


@handler("dlq.event", name="target")
async def target(event: Any, ctx: Any) -> None:
    """Never runs: these tests declare its topology and look into its queues."""
