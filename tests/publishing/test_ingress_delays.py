"""Delays through the HTTP ingress against the real broker: ``?delay=``, ``?at=``, ``X-Delay`` and
``X-Deliver-At`` hold the events in the delay levels; a bad value is 400 naming it, with nothing
published; the request signature covers the delay; the OpenAPI document lists the four."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.ingress import client
from tests.support.timing import TTL_EARLY

SECRET = "whsec-delay"
JSON = {"content-type": "application/json"}


@handler("orders.*", name="held")
async def held(event: Event[Any], ctx: Context) -> None:
    pass


@pytest.fixture
def delayed(settings: Settings) -> Settings:
    return settings.model_copy(update={"delay_levels": 25})


async def work_queue(broker: Broker, settings: Settings) -> str:
    worker = await broker.declare(held, settings=settings)
    return worker.routes[0].queue


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/events/orders.created?delay=2s", {}), ("/events/orders.created", {"X-Delay": "2s"})],
    ids=["query", "header"],
)
async def test_a_delay_holds_the_event_that_long(
    broker: Broker, delayed: Settings, path: str, headers: dict[str, str]
) -> None:
    queue = await work_queue(broker, delayed)
    async with client(delayed) as c:
        answer = await c.post(path, content=b'{"n": 1}', headers=JSON | headers)
        confirmed = time.monotonic()
    assert answer.status_code == 202, answer.text
    assert await broker.count(queue) == 0  # held in the levels
    await broker.wait_count(queue, 1, timeout=10)
    assert time.monotonic() - confirmed >= 2 - TTL_EARLY


async def test_a_batch_is_held_and_a_time_past_is_delivered_at_once(
    broker: Broker, delayed: Settings
) -> None:
    queue = await work_queue(broker, delayed)
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    lines = b'{"routing_key": "orders.a", "data": 1}\n{"routing_key": "orders.b", "data": 2}\n'
    ndjson = {"content-type": "application/x-ndjson"}
    async with client(delayed) as c:
        batch = await c.post("/events?delay=2s", content=lines, headers=ndjson)
        assert batch.status_code == 202, batch.text
        now = await c.post("/events/orders.c", content=b"3", headers=JSON | {"X-Deliver-At": past})
        assert now.status_code == 202, now.text
    await broker.wait_count(queue, 1, timeout=2)  # the one at a time past, at once
    await broker.wait_count(queue, 3, timeout=10)


@pytest.mark.parametrize(
    ("query", "headers", "levels", "detail"),
    [
        ("?delay=5x", {}, 25, "delay '5x': give a whole number and a unit"),
        ("", {"X-Delay": "-5s"}, 25, "delay '-5s'"),
        ("?at=tomorrow", {}, 25, "at 'tomorrow': not an ISO 8601 time"),
        ("", {"X-Deliver-At": "2030-01-01T09:00:00"}, 25, "give the time zone"),
        ("?delay=1s", {"X-Deliver-At": "2030-01-01T09:00:00Z"}, 25, "give one delay"),
        ("?delay=400000d", {}, 25, "longer than 25 levels hold"),
        ("?delay=90s", {}, 0, "delayed publishing is off"),
    ],
    ids=["unit", "negative", "at-text", "at-naive", "two", "too-long", "off"],
)
async def test_a_bad_delay_is_400_naming_it_and_nothing_is_published(
    broker: Broker,
    settings: Settings,
    query: str,
    headers: dict[str, str],
    levels: int,
    detail: str,
) -> None:
    with_levels = settings.model_copy(update={"delay_levels": 25})
    queue = await work_queue(broker, with_levels)
    configured = settings.model_copy(update={"delay_levels": levels})
    async with client(configured) as c:
        answer = await c.post(
            f"/events/orders.created{query}", content=b"{}", headers=JSON | headers
        )
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]
    level_queues = [f"{settings.exchange}.delay.{k}" for k in range(25)]
    assert [await broker.count(q) for q in [queue, *level_queues]] == [0] * 26


def sign(path: str, headers: dict[str, str], body: bytes, hold: str) -> str:
    """The signature header as docs/producers.md tells a producer to compute it with a delay."""
    t = int(time.time())
    fields = [str(t), "POST", path, "", "", headers["content-type"], hold]
    canonical = "\n".join(fields).encode() + b"\n" + body
    return f"t={t},v1={hmac.new(SECRET.encode(), canonical, hashlib.sha256).hexdigest()}"


async def test_the_signature_covers_the_delay(broker: Broker, delayed: Settings) -> None:
    queue = await work_queue(broker, delayed)
    path, body = "/events/orders.created", b'{"n": 1}'
    good = JSON | {"X-Delay": "1s", "x-signature-256": sign(path, JSON, body, "delay=1s")}
    async with client(delayed, hmac_secret=SecretStr(SECRET)) as c:
        # The same signature with another delay, or moved to the query: only the first differs.
        changed = await c.post(path, content=body, headers=good | {"X-Delay": "9d"})
        assert changed.status_code == 401, changed.text
        accepted = await c.post(path, content=body, headers=good)
        assert accepted.status_code == 202, accepted.text
        signed_query = JSON | {"x-signature-256": sign(path, JSON, body, "delay=2s")}
        query = await c.post(f"{path}?delay=2s", content=body, headers=signed_query)
        assert query.status_code == 202, query.text
        unsigned = JSON | {"x-signature-256": sign(path, JSON, body, "")}
        stripped = await c.post(f"{path}?delay=3s", content=body, headers=unsigned)
        assert stripped.status_code == 401, stripped.text
    await broker.wait_count(queue, 2, timeout=10)


async def test_the_openapi_document_lists_the_delay_parameters(delayed: Settings) -> None:
    async with client(delayed, docs="public") as c:
        document = (await c.get("/openapi.json")).json()
    for path in ("/events/{routing_key}", "/events"):
        parameters = document["paths"][path]["post"]["parameters"]
        given = {(p["in"], p["name"]) for p in parameters}
        assert {("query", "delay"), ("query", "at")} <= given
        assert {("header", "X-Delay"), ("header", "X-Deliver-At")} <= given
