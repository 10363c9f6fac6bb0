"""A middleware: how long each handler call took, logged around every handling of the worker.

Registered in the ``eventworker.middleware`` entry-point group (pyproject.toml) and enabled by
the ``middleware`` setting (``EVENTWORKER_MIDDLEWARE=timing``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from eventworker import Context, Event, Middleware


class Timing(Middleware):
    """Logs ``took N ms`` after each handler call, failed or not."""

    async def around(
        self, call: Callable[[], Awaitable[None]], event: Event[Any], ctx: Context
    ) -> None:
        started = time.perf_counter()
        try:
            await call()
        finally:
            ctx.logger.info("took {:.1f} ms", (time.perf_counter() - started) * 1000)
