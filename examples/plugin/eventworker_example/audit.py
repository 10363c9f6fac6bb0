"""A plugin entry point that names one handler rather than a module."""

from __future__ import annotations

from eventworker import Context, Event, handler


@handler("orders.#", name="audit_orders")
async def audit_orders(event: Event[object], ctx: Context) -> None:
    """Sees every orders.* event, alongside bill_order: a retry of bill_order never comes here."""
    ctx.logger.info("audit {} {}", event.type, event.id)
