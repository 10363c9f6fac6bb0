"""The transactional outbox with asyncpg on PostgreSQL (docs/producers.md)."""

from __future__ import annotations

import asyncpg

from eventworker import outbox


async def place_order(conn: asyncpg.Connection, order_id: str, total: float) -> str:
    async with conn.transaction():
        await conn.execute("INSERT INTO orders (id, total) VALUES ($1, $2)", order_id, total)
        event_id: str = await outbox.add(
            conn, "orders.created", {"order_id": order_id, "total": total}, aggregate_key=order_id
        )
    # Committed: the table's trigger NOTIFYs the relays, which publish the row at once.
    return event_id
