"""The handlers of acme-orders: an order is confirmed with its coupon's discount."""

from pydantic import BaseModel

from eventworker import Context, Event, RetryPolicy, handler

#: Percent off, per coupon code.
COUPONS = {"WELCOME10": 10}


class OrderPlaced(BaseModel):
    order_id: str
    total: float
    coupon: str | None = None


@handler("orders.placed", retry=RetryPolicy(max_attempts=3, delays=(1,)))
async def confirm_order(event: Event[OrderPlaced], ctx: Context) -> None:
    order = event.data
    discount = COUPONS[order.coupon] if order.coupon else 0
    total = order.total * (100 - discount) / 100
    ctx.logger.info("order {} confirmed: {:.2f}", order.order_id, total)
