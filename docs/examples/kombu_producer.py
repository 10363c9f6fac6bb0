"""Producing an event with Celery's kombu and its JSON serializer (docs/wire-format.md). kombu
labels the body ``content_encoding: utf-8``: a charset, which eventworker accepts."""

from __future__ import annotations

import kombu


def publish_with_kombu(url: str, exchange_name: str) -> None:
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        conn.Producer(serializer="json").publish(
            {"order_id": "o-1", "total": 12.5},
            exchange=kombu.Exchange(exchange_name, type="topic", durable=True),
            routing_key="orders.created",
            declare=[],  # the worker declares the exchange
            message_id="o-1-created",
            app_id="billing-api",
            headers={"tenant": "acme"},
        )
