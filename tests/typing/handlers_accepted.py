"""Handlers a type checker must accept: mypy --strict finds no error in this file
(tests/typing/test_handler_types.py runs it)."""

from __future__ import annotations

from typing import Any

from eventworker import Context, Event, Handler, handler
from eventworker.testing import Outcome, run_handler_sync
from tests.typing.models import BigOrder, Order


@handler("orders.created")
async def inferred(event: Event[Order], ctx: Context) -> None:
    order_id: str = event.data.order_id
    total: float = event.data.total
    ctx.logger.info("{} {}", order_id, total)


@handler("orders.created", model=Order)
async def same_model(event: Event[Order], ctx: Context) -> None: ...


@handler("orders.created", model=BigOrder)  # a subclass of the annotated model
async def narrower_model(event: Event[Order], ctx: Context) -> None: ...


@handler("orders.created", model=Order)
async def any_data(event: Event[Any], ctx: Context) -> None: ...


@handler("orders.created", model=Order)
def sync_handler(event: Event[Order], ctx: Context) -> None:
    ctx.publish_blocking("orders.seen", {"order_id": event.data.order_id})


@handler("demo.greet")
async def plain_json(event: Event[dict[str, str]], ctx: Context) -> None:
    name: str = event.data.get("name", "world")
    await ctx.publish("demo.greeted", {"name": name})


@handler("demo.any")
def anything(event: Event[object], ctx: Context) -> None: ...


def handlers() -> list[Handler]:
    return [inferred, same_model, narrower_model, any_data, sync_handler, plain_json, anything]


def outcome() -> Outcome:
    return run_handler_sync(inferred, {"order_id": "o-1", "total": 1.5})
