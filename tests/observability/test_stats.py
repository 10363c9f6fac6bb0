"""Queue statistics from the broker: counts by passive declare, and a poller that survives
a broker it cannot reach."""

from __future__ import annotations

import asyncio

import aio_pika
from pydantic import SecretStr

from eventworker.observability import stats
from eventworker.settings import Settings
from tests.support.broker import Broker, wait_for


async def test_counts_come_from_passive_declares_and_a_missing_queue_has_none(
    broker: Broker, settings: Settings
) -> None:
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(f"{settings.queue_prefix}stats", durable=True)
    broker._queues.add(queue.name)
    for n in range(2):
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id=str(n)), queue.name
        )
    await channel.close()
    missing = f"{settings.queue_prefix}never-declared"
    async with stats.connected(settings) as reader:
        # The missing queue first: the 404 closes the channel, the next read opens another.
        found = await reader.read([missing, queue.name])
    assert found[missing] == stats.QueueStats(missing, None, None)
    assert not found[missing].exists
    assert found[queue.name] == stats.QueueStats(queue.name, 2, 0)


async def test_the_poller_warns_once_while_the_broker_is_away_and_stops_when_told(
    settings: Settings, log_lines: list[str]
) -> None:
    away = settings.model_copy(update={"url": SecretStr("amqp://guest:guest@127.0.0.1:1/")})
    stop = asyncio.Event()
    poller = asyncio.create_task(
        stats.poll(away, ["q"], interval=0.02, on_read=lambda *_: None, stop=stop)
    )
    await wait_for(lambda: sum("queue statistics not read" in line for line in log_lines) >= 3)
    stop.set()
    await asyncio.wait_for(poller, 5)
    tries = [line for line in log_lines if "queue statistics not read" in line]
    assert ["WARNING" in line for line in tries].count(True) == 1
    assert all("guest:guest" not in line for line in tries)
