"""The worker's HTTP endpoints on one port: ``/healthz``, ``/readyz`` and ``/metrics``.

They are served by aiohttp on the worker's own event loop, on purpose: an answer from
``/healthz`` proves the loop is responsive (a handler that blocks it makes the probe time out),
which a server in a thread of its own could not tell.

- ``/healthz``: 200 while the process serves; liveness. It stays 200 while the worker waits for
  the broker: restarting the process would not bring the broker back.
- ``/readyz``: 200 when connected, the topology declared and every queue consumed by this
  worker; 503 while starting, reconnecting, draining or stopped; readiness.
- ``/metrics``: the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from loguru import logger

from eventworker.errors import ConfigError
from eventworker.settings import Settings
from eventworker.worker.lifecycle import Worker
from eventworker.worker.metrics import Metrics


def readiness(worker: Worker) -> tuple[bool, dict[str, Any]]:
    """Whether ``worker`` is ready, and what ``/readyz`` says about it."""
    consuming = {c.queue.name: not c.is_closed for c in worker.consumers}
    every_queue = len(consuming) == len(worker.routes) and all(consuming.values())
    ready = worker.ready and every_queue
    return ready, {"ready": ready, "state": worker.state.value, "consuming": consuming}


def application(worker: Worker, metrics: Metrics | None) -> web.Application:
    """The aiohttp application of the three endpoints (``/metrics`` only with ``metrics``)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"alive": True, "state": worker.state.value})

    async def readyz(request: web.Request) -> web.Response:
        ready, body = readiness(worker)
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics is not None:

        async def scrape(request: web.Request) -> web.Response:
            body, content_type = metrics.exposition()
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", scrape)
    return app


@asynccontextmanager
async def serving(
    worker: Worker, metrics: Metrics | None, *, host: str, port: int
) -> AsyncIterator[int]:
    """Serve the endpoints on ``host``:``port`` while inside; yields the bound port (``port``
    0 binds a free one).

    Raises:
        ConfigError: the address cannot be bound (in use, not local, no permission).
    """
    # No access log: a probe every few seconds would drown the worker's own lines.
    runner = web.AppRunner(application(worker, metrics), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot serve metrics and health endpoints on {host}:{port}: "
            f"{exc.strerror or exc} (metrics_host, metrics_port)"
        ) from None
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def run_worker(worker: Worker, metrics: Metrics, settings: Settings, *, port: int) -> None:
    """Run ``worker`` (SIGTERM/SIGINT handled) with its endpoints on ``port`` and its queue
    depths polled; everything stops when the worker has drained.

    With several worker processes, each calls this with a port of its own.

    Raises:
        ConfigError: the port cannot be bound; and whatever ``Worker.run`` raises.
    """
    metrics.watch(worker)
    host = settings.metrics_host
    async with serving(worker, metrics, host=host, port=port) as bound, metrics.polling(settings):
        logger.info("serving /metrics, /healthz and /readyz on http://{}:{}/", host, bound)
        await worker.run(handle_signals=True)
