"""The HTTP ingress against the real broker: 202 only for confirmed events, and the right 4xx
or 503 otherwise, with nothing published for a refused request."""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import pytest
from pydantic import SecretStr

from eventworker.errors import ConfigError
from eventworker.publishing.ingress import create_app
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.cli import EVENTWORKER, env_for
from tests.support.ingress import client, free_port
from tests.support.queues import sink


async def test_a_confirmed_event_is_202_with_the_idempotency_key_as_its_id(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    async with client(settings) as c:
        answer = await c.post(
            "/events/orders.created",
            content=b'{"order_id": "o-1"}',
            headers={
                "content-type": "application/json",
                "idempotency-key": "order-o-1",
                "x-correlation-id": "checkout-1",
            },
        )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": "order-o-1", "status": "confirmed", "detail": ""}
    [message] = await broker.take_all(queue, expect=1)
    assert message.message_id == "order-o-1" and message.correlation_id == "checkout-1"
    assert orjson.loads(message.body) == {"order_id": "o-1"}
    assert message.app_id == "eventworker-http" and message.type == "orders.created"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "detail"),
    [
        ("/events/orders.created", b"{not json", {}, 400, "invalid JSON"),
        ("/events/orders.*", b"{}", {}, 400, "wildcard"),
        ("/events/billing.charged", b"{}", {}, 403, "not allowed"),
        ("/events/orders.created", b"[" + b"1," * 600 + b"1]", {}, 413, "limit"),
        ("/events/orders.created", b"{}", {"content-type": "text/plain"}, 415, "json"),
        ("/events/orders.created", b"{}", {"idempotency-key": "k" * 300}, 400, "255 bytes"),
        ("/events", b'{"routing_key": "orders.x", "data": 1}\n{oops', {}, 400, "line 2"),
        ("/events", b'{"routing_key": "billing.x", "data": 1}', {}, 403, "line 1"),
        ("/events", b'{"routing_key": "orders.x"}', {}, 400, "line 1"),
        ("/events", b"\n\n", {}, 400, "no event"),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_published(
    broker: Broker,
    settings: Settings,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    queue = await sink(broker, "#")
    async with client(settings, allowed_keys=("orders.#",)) as c:
        answer = await c.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert detail.lower() in answer.json()["detail"].lower()
    assert await broker.count(queue) == 0


async def test_an_unroutable_event_is_422_and_an_unreachable_broker_is_503(
    broker: Broker, settings: Settings
) -> None:
    await sink(broker, "orders.#")
    async with client(settings) as c:
        unroutable = await c.post("/events/nobody.listens", content=b"{}")
    assert unroutable.status_code == 422 and unroutable.json()["status"] == "unroutable"
    down = settings.model_copy(update={"url": SecretStr("amqp://guest:guest@127.0.0.1:1/")})
    async with client(down) as c:
        unavailable = await c.post("/events/orders.created", content=b"{}")
        health = await c.get("/health")
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "5"
    assert unavailable.json()["status"] == "connection_lost"
    assert health.json() == {"broker_connected": False}


async def test_a_batch_is_202_when_all_are_confirmed_and_reports_each_event(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    lines = b"\n".join(
        [
            b'{"routing_key": "orders.created", "data": {"n": 1}}',
            b'{"routing_key": "orders.paid", "data": {"n": 2}, "id": "paid-2"}',
        ]
    )
    async with client(settings) as c:
        ok = await c.post(
            "/events",
            content=lines,
            headers={"content-type": "application/x-ndjson", "idempotency-key": "batch-7"},
        )
        mixed = await c.post(
            "/events",
            content=lines + b'\n{"routing_key": "nobody.listens", "data": 3}',
            headers={"content-type": "application/x-ndjson"},
        )
    assert ok.status_code == 202
    assert [(r["id"], r["status"]) for r in ok.json()["results"]] == [
        ("batch-7-1", "confirmed"),
        ("paid-2", "confirmed"),
    ]
    assert mixed.status_code == 422
    assert [r["status"] for r in mixed.json()["results"]] == [
        "confirmed",
        "confirmed",
        "unroutable",
    ]
    delivered = [m.message_id for m in await broker.take_all(queue, expect=4)]
    assert len(delivered) == 4 and {"batch-7-1", "paid-2"} <= set(delivered)


async def test_the_openapi_document_is_served(settings: Settings) -> None:
    async with client(settings) as c:
        document = (await c.get("/openapi.json")).json()
    assert {"/events/{routing_key}", "/events", "/health"} <= set(document["paths"])
    single = document["paths"]["/events/{routing_key}"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(single["responses"])


async def test_eventworker_serve_answers_over_http_and_stops_on_sigterm(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    port = free_port()
    env = env_for(settings, EVENTWORKER_HTTP__TOKEN="s3cret-t0ken")
    server = await asyncio.create_subprocess_exec(
        EVENTWORKER, "serve", "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(100):  # until it listens, at most ~10 s
                try:
                    answer = await c.post(
                        "/events/orders.created",
                        json={"n": 1},
                        headers={"authorization": "Bearer s3cret-t0ken"},
                    )
                    break
                except httpx.ConnectError:
                    assert server.returncode is None
                    await asyncio.sleep(0.1)
        assert answer.status_code == 202
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.stderr is not None
    log = (await server.stderr.read()).decode()
    assert "HTTP ingress on http://127.0.0.1" in log and "s3cret-t0ken" not in log
    assert len(await broker.take_all(queue, expect=1)) == 1


def test_an_allow_list_pattern_that_is_no_binding_key_is_a_config_error(settings: Settings) -> None:
    bad = settings.model_copy(
        update={"http": settings.http.model_copy(update={"allowed_keys": ("orders.*x",)})}
    )
    with pytest.raises(ConfigError, match="allowed_keys"):
        create_app(bad)
