"""Middleware for every handler of a worker (docs/plugins.md): a tenant check that refuses
events it can never accept, and a timer around the handler call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from eventworker import Context, Event, Middleware, Reject

KNOWN_TENANTS = {"acme", "globex"}


class TenantGuard(Middleware):
    """Dead-letters events of unknown tenants before any handler runs."""

    async def before(self, event: Event[Any], ctx: Context) -> None:
        tenant = event.headers.get("tenant")
        if tenant not in KNOWN_TENANTS:
            # Dead-lettered at once: reason rejected_by_middleware, this text in the diagnosis.
            raise Reject(f"unknown tenant {tenant!r}")


class Timing(Middleware):
    """Logs how long each handler call took."""

    async def around(
        self, call: Callable[[], Awaitable[None]], event: Event[Any], ctx: Context
    ) -> None:
        started = time.perf_counter()
        try:
            await call()
        finally:
            ctx.logger.info("took {:.1f} ms", (time.perf_counter() - started) * 1000)

    async def on_outcome(self, event: Event[Any], ctx: Context, outcome: object) -> None:
        ctx.logger.debug("outcome {}", outcome)
