"""Producing an event with plain aio-pika, no eventworker code (docs/wire-format.md)."""

from __future__ import annotations

import aio_pika


async def publish_plain(url: str, exchange_name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name)  # declared by the worker
        await exchange.publish(
            aio_pika.Message(
                b'{"order_id": "o-1", "total": 12.5}',
                content_type="application/json",
                message_id="o-1-created",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="orders.created",
            mandatory=True,  # an unroutable event raises instead of vanishing
        )
