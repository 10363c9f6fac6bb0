"""The crash-loop backstop (catalogue test C4): a handler that kills its worker on one message
ends with exactly that message dead-lettered and every other message processed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aio_pika

from eventworker.settings import Settings
from tests.support.broker import Broker, spawn_worker
from tests.support.cli import env_for
from tests.support.crash_worker import crashy


async def test_a_handler_that_kills_its_worker_dead_letters_exactly_that_message(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    crashing = settings.model_copy(update={"prefetch": 32, "concurrency": 8, "delivery_limit": 3})
    route = (await broker.declare(crashy, settings=crashing)).routes[0]
    channel = await broker.connection.channel(publisher_confirms=True)
    innocent = [f"i{n:03}" for n in range(999)]
    ids = [*innocent[:500], "poison", *innocent[500:]]
    exchange = await channel.get_exchange(settings.exchange, ensure=False)
    for event_id in ids:
        body = b'{"poison": true}' if event_id == "poison" else b"{}"
        await exchange.publish(aio_pika.Message(body, message_id=event_id), "crash.event")
    await channel.close()

    log = tmp_path / "handled.log"
    log.touch()
    env = env_for(
        settings,
        EVENTWORKER_PREFETCH="32",
        EVENTWORKER_CONCURRENCY="8",
        EVENTWORKER_DELIVERY_LIMIT="3",
        CRASH_LOG=str(log),
    )
    restarts = -1
    deadline = time.monotonic() + 150
    settled = False
    while not settled:
        # The supervisor: start the worker again whenever it died.
        restarts += 1
        assert restarts <= 4, f"restarted {restarts} times"
        process = await spawn_worker("tests.support.crash_worker", env)
        try:
            while process.returncode is None:
                # Every message accounted for: handled, or dead-lettered (which ones: asserted
                # below).
                handled = set(log.read_text().split()) & set(innocent)
                dead_lettered_count = await broker.count(route.dead_letter_queue)
                if await broker.count(route.queue) == 0 and len(
                    handled
                ) + dead_lettered_count >= len(ids):
                    settled = True
                    break
                assert time.monotonic() < deadline, "the crash loop did not end"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.1)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)
        if not settled:
            assert process.returncode == -signal.SIGKILL  # it died on the poison message
    dead_lettered = await broker.take_all(route.dead_letter_queue)
    assert [m.message_id for m in dead_lettered] == ["poison"]
    assert dead_lettered[0].headers["x-death"][0]["reason"] == "delivery_limit"
    assert set(log.read_text().split()) == set(innocent)
    assert await broker.count(route.queue) == 0
    assert restarts <= 4
