"""Sending an event to the HTTP ingress with a request signature (docs/producers.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx


def signature(secret: str, method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    """The X-Signature-256 value: t=<unix seconds>,v1=<hex HMAC-SHA256 of the canonical string>.

    The canonical string is t, the method, the path (as sent, without the query string), the
    Idempotency-Key, X-Correlation-Id and Content-Type headers ("" when absent), one line feed
    after each, then the body.
    """
    t = int(time.time())
    fields = [str(t), method, path]
    fields += [headers.get(h, "") for h in ("Idempotency-Key", "X-Correlation-Id", "Content-Type")]
    canonical = "\n".join(fields).encode() + b"\n" + body
    digest = hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


async def send(client: httpx.AsyncClient, secret: str, order_id: str) -> str:
    path, body = "/events/orders.created", json.dumps({"order_id": order_id}).encode()
    headers = {
        "Content-Type": "application/json",
        # The event id: a retry after a lost answer gives a duplicate consumers recognise.
        "Idempotency-Key": f"{order_id}-created",
    }
    # Signed when sent: a retry signs again, since each signature is accepted once.
    headers["X-Signature-256"] = signature(secret, "POST", path, headers, body)
    answer = await client.post(path, content=body, headers=headers)
    answer.raise_for_status()  # 202 only once the broker confirmed the event
    event_id: str = answer.json()["id"]
    return event_id
