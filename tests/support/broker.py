"""Test helpers against the real broker: publish raw messages, read queues, run a worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from eventworker.handlers import Handler
from eventworker.plugins.discovery import Plugin, Registration, discover
from eventworker.plugins.resolved import resolve
from eventworker.settings import Settings
from eventworker.topology import declare
from eventworker.topology.layout import Plan
from eventworker.worker.lifecycle import Worker

ROOT = Path(__file__).resolve().parents[2]

TEST_PLUGIN = Plugin(entry_point="tests", value="tests", distribution="tests", version="0")


def registrations(*handlers: Handler) -> list[Registration]:
    return [Registration(h, TEST_PLUGIN) for h in handlers]


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02
) -> None:
    """Wait until ``predicate()`` is true (polling an in-memory condition, never the clock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Broker:
    """Looks into queues with plain aio-pika, and cleans up what a test declared."""

    def __init__(self, connection: AbstractConnection, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._queues: set[str] = set()
        self._exchanges: set[str] = {settings.exchange, f"{settings.exchange}.return"}

    def track(self, worker: Worker) -> None:
        self.track_plan(worker.plan)

    def track_plan(self, plan: Plan) -> None:
        """Delete the plan's queues and exchanges after the test (a quorum queue left behind
        keeps file handles on the broker: hundreds of them exhaust its limit)."""
        self._queues.update(q.name for q in plan.queues)
        self._exchanges.update(e.name for e in plan.exchanges)

    async def declare(self, *handlers: Handler, settings: Settings | None = None) -> Worker:
        """Declare the topology a worker of ``handlers`` would, without running it."""
        worker = Worker(registrations(*handlers), settings or self.settings)
        self.track(worker)
        channel = await self.connection.channel()
        try:
            await declare.apply(worker.plan, channel)
        finally:
            await channel.close()
        return worker

    def track_installed(self, *names: str) -> list[str]:
        """Track the queues a worker of the installed handlers ``names`` declares; returns
        their work queues in that order."""
        regs = discover(names=names)
        self.track(Worker(regs, self.settings))
        by_name = {r.handler.name: r for r in resolve(regs, self.settings)}
        return [by_name[n].queue for n in names]

    async def publish(
        self, routing_key: str, body: bytes, *, exchange: str | None = None, **properties: Any
    ) -> None:
        """Publish like any plain AMQP client would (confirmed)."""
        channel = await self.connection.channel()
        try:
            target = await channel.get_exchange(exchange or self.settings.exchange, ensure=False)
            await target.publish(aio_pika.Message(body, **properties), routing_key)
        finally:
            await channel.close()

    async def count(self, queue: str) -> int:
        """Messages ready in ``queue`` (unacknowledged ones are not counted)."""
        return (await self._declare_ok(queue)).message_count or 0

    async def wait_count(self, queue: str, expected: int, timeout: float = 20) -> None:
        """Wait until ``queue`` holds ``expected`` ready messages (polling the broker: a quorum
        queue takes messages handed back through Raft, a moment after the nack returned)."""
        deadline = time.monotonic() + timeout
        while (held := await self.count(queue)) != expected:
            assert time.monotonic() < deadline, f"{queue} holds {held}, never {expected}"
            await asyncio.sleep(0.05)

    async def consumers(self, queue: str) -> int:
        return (await self._declare_ok(queue)).consumer_count or 0

    async def _declare_ok(self, queue: str) -> Any:
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result
        finally:
            await channel.close()

    async def take_all(
        self, queue: str, expect: int = 0, timeout: float = 15.0
    ) -> list[AbstractIncomingMessage]:
        """Get and ack every message of ``queue``, waiting until at least ``expect`` arrived."""
        channel = await self.connection.channel()
        taken: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        try:
            q = await channel.get_queue(queue, ensure=False)
            while True:
                message = await q.get(fail=False)
                if message is not None:
                    await message.ack()
                    taken.append(message)
                    continue
                if len(taken) >= expect or time.monotonic() > deadline:
                    return taken
                await asyncio.sleep(0.05)
        finally:
            await channel.close()

    async def cleanup(self) -> None:
        channel = await self.connection.channel()
        for name in self._queues:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        for name in self._exchanges:
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
        with contextlib.suppress(Exception):
            await channel.close()


@contextlib.asynccontextmanager
async def running(
    broker: Broker, handlers: Sequence[Handler], settings: Settings, **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker running in this event loop with ``handlers``; stopped (drained) on exit."""
    worker = Worker(registrations(*handlers), settings, **kwargs)
    broker.track(worker)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(asyncio.shield(_ready_or_failed(worker, task)), 30)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def _ready_or_failed(worker: Worker, task: asyncio.Task[None]) -> None:
    ready = asyncio.ensure_future(worker.wait_ready(30))
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what the worker raised
        raise AssertionError("worker stopped before it was ready")


async def spawn_worker(module: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``python -m module`` (a worker script under tests/) from the repository root, quiet."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def close_worker_connections() -> None:
    """Close, on the broker's side, the consuming connections of this process's workers."""
    listing = _rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    ours = [
        line.split("\t")[0]
        for line in listing.splitlines()
        if "eventworker worker " in line and f":{os.getpid()}" in line
    ]
    assert ours, listing
    for pid in ours:
        _rabbitmqctl("close_connection", pid, "test closes it")


needs_rabbitmqctl = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v rabbitmqctl"], capture_output=True).returncode != 0,
    reason="needs rabbitmqctl for the broker under test",
)


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout
