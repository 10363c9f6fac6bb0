"""Exactly-once effects with the PostgreSQL inbox: the handler's writes and the inbox's
"done" mark commit in one transaction."""

from eventworker import Context, Event, handler


@handler("orders.created", idempotent=True)
async def bill_order(event: Event[dict[str, object]], ctx: Context) -> None:
    async with ctx.transaction() as conn:  # an asyncpg connection, in a transaction
        await conn.execute(
            "INSERT INTO charges (order_id, amount) VALUES ($1, $2)",
            event.data["order_id"],
            event.data["total"],
        )
    # The charge and the inbox's "done" mark committed together, or neither did.
