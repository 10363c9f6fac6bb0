"""The benchmark plugin's handlers with features on: a 10-field pydantic model, a log line,
the inbox, and a handler that waits; and the 10-field body they read (``order_body``).

``benchmarks.plugin`` imports them, so the one entry point serves every group.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from benchmarks import probe
from benchmarks.wire import BODY_SIZE, ROUTING_KEY
from eventworker import Context, Event, handler

#: What ``bench_wait`` awaits: a stand-in for one I/O call (a database query, an HTTP call).
WAIT_SECONDS = 0.005


class Order(BaseModel):
    """Ten fields of the usual kinds: strings, numbers, a date-time, a flag."""

    order_id: str
    customer_id: str
    total: float
    currency: str
    items: int
    created_at: datetime
    email: str
    country: str
    express: bool
    note: str


def order_body(n: int, size: int = BODY_SIZE) -> bytes:
    """Message ``n``'s JSON body: an :class:`Order`, its note padded to ``size`` bytes."""
    data: dict[str, Any] = {
        "order_id": f"o-{n:08d}",
        "customer_id": f"c-{n % 9973:06d}",
        "total": 12.5 + n % 100,
        "currency": "EUR",
        "items": 1 + n % 7,
        "created_at": "2026-01-02T03:04:05.678+00:00",
        "email": f"customer{n % 9973}@example.com",
        "country": "DE",
        "express": n % 2 == 0,
        "note": "",
    }
    encoded = json.dumps(data, separators=(",", ":"))
    data["note"] = "x" * max(0, size - len(encoded))
    return json.dumps(data, separators=(",", ":")).encode()


@handler(ROUTING_KEY, name="bench_model")
async def model(event: Event[Order], ctx: Context) -> None:
    probe.hit()


@handler(ROUTING_KEY, name="bench_model_logged")
async def model_logged(event: Event[Order], ctx: Context) -> None:
    """One INFO line per event, as handlers write them (eventworker itself writes none for a
    handling that succeeds)."""
    ctx.logger.info("order {} charged {}", event.data.order_id, event.data.total)
    probe.hit()


@handler(ROUTING_KEY, name="bench_model_idempotent", idempotent=True)
async def model_idempotent(event: Event[Order], ctx: Context) -> None:
    probe.hit()


@handler(ROUTING_KEY, name="bench_wait")
async def wait(event: Event[Any], ctx: Context) -> None:
    """Waits as a handler waits on I/O, without CPU."""
    await asyncio.sleep(WAIT_SECONDS)
    probe.hit()
