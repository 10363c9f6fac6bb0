"""Sending an event to the HTTP ingress with an HMAC signature (docs/producers.md)."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx


async def send(client: httpx.AsyncClient, secret: str, order_id: str) -> str:
    body = json.dumps({"order_id": order_id}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    answer = await client.post(
        "/events/orders.created",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Signature-256": f"sha256={signature}",
            # The event id: a retry after a lost answer gives a duplicate consumers recognise.
            "Idempotency-Key": f"{order_id}-created",
        },
    )
    answer.raise_for_status()  # 202 only once the broker confirmed the event
    event_id: str = answer.json()["id"]
    return event_id
