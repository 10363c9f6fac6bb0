"""Publishing from asyncio application code (docs/producers.md); tests/test_docs.py runs it."""

from __future__ import annotations

import asyncio

from eventworker import NewEvent, Publisher


async def place_order(url: str, exchange: str) -> list[str]:
    async with Publisher.connect(url, exchange=exchange) as pub:
        # One event: returns once the broker confirmed it, raises PublishError otherwise.
        await pub.publish("orders.created", {"order_id": "o-1", "total": 12.5}, id="o-1-created")
        # A batch: confirms in flight together; one result per event, in order.
        results = await pub.publish_many(
            NewEvent("orders.line_added", {"order_id": "o-1", "sku": sku}, id=f"o-1-{sku}")
            for sku in ("A-1", "B-2")
        )
        return [r.status for r in results]  # ["confirmed", "confirmed"], or "nacked", ...


if __name__ == "__main__":
    print(asyncio.run(place_order("amqp://guest:guest@localhost:5672/", "eventworker")))
