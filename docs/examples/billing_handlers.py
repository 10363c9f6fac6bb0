"""A handler plugin module (docs/plugins.md); test_billing_handlers.py tests it with the kit."""

from __future__ import annotations

from pydantic import BaseModel

from eventworker import Context, Event, Reject, Retry, RetryPolicy, handler


class OrderCreated(BaseModel):
    order_id: str
    total: float


def payment_service_ready() -> bool:
    """Stands in for a real dependency check."""
    return True


@handler(
    "orders.created",
    "orders.*.created",
    model=OrderCreated,
    retry=RetryPolicy(max_attempts=4, delays=(1, 10, 60)),
    concurrency=8,
    timeout=30,
    publishes=["billing.charged"],  # described by `eventworker asyncapi`
)
async def bill_order(event: Event[OrderCreated], ctx: Context) -> None:
    """Charge a created order."""
    if event.data.total < 0:
        raise Reject("negative total")  # straight to the dead-letter queue
    if not payment_service_ready():
        raise Retry(delay=30, reason="payment service warming up")
    await ctx.publish("billing.charged", {"order_id": event.data.order_id})


@handler("billing.charged")
async def record_charge(event: Event[dict[str, str]], ctx: Context) -> None:
    ctx.logger.info("charged {} (caused by {})", event.data["order_id"], event.causation_id)
