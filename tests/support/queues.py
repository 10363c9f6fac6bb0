"""Queues a test reads what was published from: a sink bound to the exchange, drained."""

from __future__ import annotations

import asyncio
import time

from aio_pika.abc import AbstractIncomingMessage

from tests.support.broker import Broker


async def sink(broker: Broker, key: str, name: str = "sink", **arguments: object) -> str:
    """A queue of this test bound to ``key`` on the test's exchange (declared here)."""
    channel = await broker.connection.channel()
    exchange = await channel.declare_exchange(broker.settings.exchange, "topic", durable=True)
    queue = await channel.declare_queue(
        f"{broker.settings.queue_prefix}{name}", durable=True, arguments=arguments or None
    )
    await queue.bind(exchange, key)
    await channel.close()
    broker._queues.add(queue.name)
    return queue.name


async def drain(
    broker: Broker, queue: str, expect: int, timeout: float = 60.0
) -> list[AbstractIncomingMessage]:
    """Consume and ack ``queue`` until ``expect`` messages came and then none for a moment
    (a consumer with a large prefetch: basic.get per message is far slower)."""
    channel = await broker.connection.channel()
    await channel.set_qos(prefetch_count=1000)
    taken: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    try:
        q = await channel.get_queue(queue, ensure=False)
        async with q.iterator() as messages:
            while time.monotonic() < deadline:
                quiet = 0.5 if len(taken) >= expect else deadline - time.monotonic()
                try:
                    message = await asyncio.wait_for(anext(messages), max(quiet, 0.01))
                except TimeoutError:
                    if len(taken) >= expect:
                        break
                    continue
                await message.ack()
                taken.append(message)
    finally:
        await channel.close()
    return taken
