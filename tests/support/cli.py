"""Running the eventworker command as an operator would: its path, its environment, one call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eventworker.settings import Settings
from tests.support.broker import Broker

CANARY = "CANARY-p4ss-7d2e"

EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env.update(
        {
            "EVENTWORKER_URL": settings.url.get_secret_value(),
            "EVENTWORKER_EXCHANGE": settings.exchange,
            "EVENTWORKER_QUEUE_PREFIX": settings.queue_prefix,
            **extra,
        }
    )
    return env


def cli(
    settings: Settings, *args: str, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTWORKER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env_for(settings, **extra),
        timeout=120,
    )


async def bound_queue(broker: Broker, key: str) -> str:
    """The test's exchange with one queue bound to ``key``, as a worker would leave it."""
    channel = await broker.connection.channel()
    exchange = await channel.declare_exchange(broker.settings.exchange, "topic", durable=True)
    queue = await channel.declare_queue(f"{broker.settings.queue_prefix}sink", durable=True)
    await queue.bind(exchange, key)
    await channel.close()
    broker._queues.add(queue.name)
    return queue.name
