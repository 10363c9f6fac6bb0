"""A worker's /metrics endpoint read by a test: start a worker with it, scrape, wait for a value."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from eventworker.handlers import Handler
from eventworker.settings import Settings
from eventworker.worker.health import serving
from eventworker.worker.lifecycle import Worker
from eventworker.worker.metrics import Metrics
from tests.support.broker import Broker, running
from tests.support.cli import EVENTWORKER, env_for


async def scrape(port: int) -> Samples:
    """Every sample of ``GET /metrics``, keyed by name and labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Wait until ``check()`` is true (it scrapes; no blind sleep decides anything)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def observed(
    broker: Broker, handlers: list[Handler], settings: Settings
) -> AsyncIterator[tuple[Worker, Metrics, int]]:
    """A running worker with metrics, its endpoints on a free port and its queues polled."""
    metrics = Metrics()
    async with running(broker, handlers, settings, observers=[metrics]) as worker:
        metrics.watch(worker)
        async with (
            serving(worker, metrics, host="127.0.0.1", port=0) as port,
            metrics.polling(settings),
        ):
            yield worker, metrics, port


def start_worker_with_metrics(log: Path, settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    """``eventworker run ARGS`` in the background, its output in ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [EVENTWORKER, "run", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(settings, EVENTWORKER_METRICS_HOST="127.0.0.1"),
        )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
