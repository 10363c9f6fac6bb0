"""Dead-letter queues filled for a test: the messages, their ids, the handler's queues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson

from eventworker.deadletters.operations import DeadLetterQueue
from eventworker.handlers import handler
from eventworker.settings import Settings
from eventworker.topology import layout
from tests.support.broker import Broker

PRODUCED = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


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
    """Put copies into ``queue`` the way dispatch dead-letters them (confirmed)."""
    channel = await broker.connection.channel(publisher_confirms=True)
    for n, event_id in enumerate(ids):
        reason = "exception" if n % 2 else "schema_error"
        message = aio_pika.Message(
            orjson.dumps({"n": n}),
            message_id=event_id,
            content_type="application/json",
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
        await channel.default_exchange.publish(message, queue)
    await channel.close()


async def ids_in(broker: Broker, queue: str) -> list[str]:
    return [m.message_id or "" for m in await broker.take_all(queue)]


IDS = [f"m{n}" for n in range(10)]

H = "x-eventworker-"


@handler("dlq.event", name="target")
async def target(event: Any, ctx: Any) -> None:
    """Never runs: these tests declare its topology and look into its queues."""
