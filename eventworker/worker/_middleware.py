"""The middleware chain around one handling: ``before`` hooks, ``around`` wrappers, the handler,
then ``after`` or ``on_failure``, and ``on_outcome`` once the delivery is settled.

Only hooks a middleware overrides are called. A ``Reject`` a middleware raises outside the
handler becomes :class:`RejectedByMiddleware` (dead-lettered at once, naming it); exceptions
of ``after``, ``on_failure`` and ``on_outcome`` are logged and change nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loguru import logger

from eventworker.envelope import Event
from eventworker.errors import Reject, RejectedByMiddleware
from eventworker.handlers import Context, Middleware
from eventworker.observability.logs import one_line

Call = Callable[[], Awaitable[None]]


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


class Chain:
    """The middleware of a worker, first listed outermost; built once, used by every handling."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        ordered = tuple(middleware)
        self.names = tuple(m.name for m in ordered)
        self._before = tuple(m for m in ordered if _overrides(m, "before"))
        self._around = tuple(m for m in ordered if _overrides(m, "around"))
        # The way back out runs innermost first.
        self._after = tuple(m for m in reversed(ordered) if _overrides(m, "after"))
        self._failure = tuple(m for m in reversed(ordered) if _overrides(m, "on_failure"))
        self._outcome = tuple(m for m in reversed(ordered) if _overrides(m, "on_outcome"))

    async def run(self, event: Event[Any], ctx: Context, handler: Call) -> None:
        """The ``before`` hooks, then the handler inside the ``around`` wrappers.

        Raises:
            RejectedByMiddleware: a middleware raised ``Reject`` outside the handler.
            BaseException: whatever the handler or a middleware raised otherwise.
        """
        for middleware in self._before:
            try:
                await middleware.before(event, ctx)
            except Reject as exc:
                raise RejectedByMiddleware(middleware.name, exc.reason) from exc
        if not self._around:
            await handler()
            return
        raised: list[BaseException] = []

        async def innermost() -> None:
            try:
                await handler()
            except BaseException as exc:
                raised.append(exc)
                raise

        call: Call = innermost
        for middleware in reversed(self._around):
            call = _link(middleware, call, event, ctx, raised)
        await call()

    async def after(self, event: Event[Any], ctx: Context) -> None:
        for middleware in self._after:
            await _told(middleware, "after", middleware.after(event, ctx))

    async def failed(self, event: Event[Any], ctx: Context, error: BaseException) -> None:
        for middleware in self._failure:
            await _told(middleware, "on_failure", middleware.on_failure(event, ctx, error))

    async def outcome(self, event: Event[Any], ctx: Context, decision: object) -> None:
        for middleware in self._outcome:
            await _told(middleware, "on_outcome", middleware.on_outcome(event, ctx, decision))


def _link(
    middleware: Middleware,
    inner: Call,
    event: Event[Any],
    ctx: Context,
    raised: list[BaseException],
) -> Call:
    async def run() -> None:
        try:
            await middleware.around(inner, event, ctx)
        except Reject as exc:
            if any(exc is r for r in raised):
                raise  # the handler's own Reject, passing through
            raise RejectedByMiddleware(middleware.name, exc.reason) from exc

    return run


async def _told(middleware: Middleware, hook: str, call: Awaitable[None]) -> None:
    try:
        await call
    except Exception as exc:
        logger.error(
            "middleware {} {} failed: {}: {}",
            middleware.name,
            hook,
            type(exc).__name__,
            one_line(str(exc), 200),
        )
