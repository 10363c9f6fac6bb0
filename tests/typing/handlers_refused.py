"""Handlers a type checker must refuse: each error is marked with the ``type: ignore`` of its
code, and mypy --strict (which warns of an ignore that is not needed) finds no other
(tests/typing/test_handler_types.py runs it)."""

from __future__ import annotations

from typing import Any

from eventworker import Context, Event, handler
from tests.typing.models import BigOrder, Invoice, Order


@handler("orders.created")
async def missing_field(event: Event[Order], ctx: Context) -> None:
    print(event.data.missing_field)  # type: ignore[attr-defined]


@handler("orders.created")
async def wrong_field_type(event: Event[Order], ctx: Context) -> None:
    count: int = event.data.order_id  # type: ignore[assignment]
    print(count)


@handler("orders.created", model=Invoice)  # type: ignore[arg-type]
async def contradicting_model(event: Event[Order], ctx: Context) -> None: ...


@handler("orders.created", model=Order)  # type: ignore[arg-type]
async def wider_model(event: Event[BigOrder], ctx: Context) -> None: ...


@handler("orders.created", model=Order)  # type: ignore[arg-type]
async def model_for_plain_json(event: Event[dict[str, Any]], ctx: Context) -> None: ...


@handler("orders.created", model=dict)  # type: ignore[type-var]
async def not_a_model(event: Event[Any], ctx: Context) -> None: ...


@handler("orders.created")  # type: ignore[arg-type]
async def wrong_context(event: Event[Order], ctx: str) -> None: ...


@handler("orders.created")  # type: ignore[arg-type]
async def no_context(event: Event[Order]) -> None: ...
