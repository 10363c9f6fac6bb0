"""The plugins' resources entered for a worker's lifetime and left in reverse order.

Entering happens once per worker process, after the plugins are loaded and before anything is
consumed; leaving, after the drain, and also when start-up fails after some were entered. A
resource that fails to leave is logged and the others are still left: stopping goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

from loguru import logger

from eventworker.errors import ResourceError
from eventworker.handlers import Resource
from eventworker.observability.logs import one_line
from eventworker.plugins.discovery import Plugin


async def enter(
    stack: AsyncExitStack,
    resources: Sequence[tuple[Resource[Any], Plugin]],
    *,
    stand_ins: Mapping[type[Any], Any] | None = None,
) -> dict[type[Any], Any]:
    """Enter each resource on ``stack`` (its exit left to the stack) and return the objects by
    type. A type in ``stand_ins`` is not entered: that object is used as it is.

    Raises:
        ResourceError: a resource's set-up raised; naming its plugin, the resource and the
            error. Those entered before it stay on ``stack``, to be left.
    """
    objects: dict[type[Any], Any] = dict(stand_ins or {})
    for res, plugin in resources:
        if res.key in objects:
            continue
        try:
            manager = res.open()
            if isinstance(manager, AbstractAsyncContextManager) or hasattr(manager, "__aenter__"):
                value = await manager.__aenter__()
                stack.push_async_callback(_leave_async, res, manager)
            else:
                # A sync one on the event loop's thread: nothing is consumed yet, or any more.
                value = manager.__enter__()
                stack.push_async_callback(_leave_sync, res, manager)
        except Exception as exc:
            raise ResourceError(
                f"resource {res.name} ({res.key.__qualname__}) failed to start: "
                f"{type(exc).__name__}: {one_line(str(exc), 300)}",
                entry_point=plugin.entry_point,
                distribution=plugin.distribution,
            ) from exc
        logger.info(
            "resource {} ({}) of plugin {} started",
            res.name,
            res.key.__qualname__,
            plugin.entry_point,
        )
        objects[res.key] = value
    return objects


async def _leave_async(res: Resource[Any], manager: Any) -> None:
    try:
        await manager.__aexit__(None, None, None)
    except Exception as exc:
        _failed_to_leave(res, exc)


async def _leave_sync(res: Resource[Any], manager: Any) -> None:
    try:
        manager.__exit__(None, None, None)
    except Exception as exc:
        _failed_to_leave(res, exc)


def _failed_to_leave(res: Resource[Any], exc: Exception) -> None:
    logger.error(
        "resource {} ({}) failed to stop: {}: {}",
        res.name,
        res.key.__qualname__,
        type(exc).__name__,
        one_line(str(exc), 300),
    )
