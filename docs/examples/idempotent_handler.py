"""An idempotent handler: a duplicate of an event it completed is acked without running it."""

from eventworker import Context, Event, handler


@handler("orders.created", idempotent=True)
async def bill_order(event: Event[dict[str, object]], ctx: Context) -> None: ...
