"""What the HTTP ingress trusts: a request signature over the whole request, accepted once and
only within its time window; routing keys without control characters; clients cut off when they
send too slowly; the OpenAPI documents behind the same authentication."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from eventworker.errors import SignatureError
from eventworker.publishing.http_server import server
from eventworker.publishing.ingress import create_app
from eventworker.publishing.signature import Signed, Verifier, parse
from eventworker.settings import HttpSettings, Settings
from tests.support.broker import Broker
from tests.support.cli import EVENTWORKER, env_for
from tests.support.ingress import client, free_port
from tests.support.queues import sink

SECRET = "whsec-9f1c"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
BODY = b'{"order_id": "o-1"}'
HEADERS = {
    "content-type": "application/json",
    "idempotency-key": "order-o-1",
    "x-correlation-id": "checkout-1",
}


def sign(method: str, path: str, headers: dict[str, str], body: bytes, t: int | None = None) -> str:
    """The signature header as docs/producers.md tells a producer to compute it."""
    t = int(time.time()) if t is None else t
    fields = [str(t), method, path]
    fields += [headers.get(h, "") for h in ("idempotency-key", "x-correlation-id", "content-type")]
    canonical = "\n".join(fields).encode() + b"\n" + body
    return f"t={t},v1={hmac.new(SECRET.encode(), canonical, hashlib.sha256).hexdigest()}"


def signed(path: str, body: bytes = BODY, t: int | None = None, **headers: str) -> dict[str, str]:
    given = HEADERS | headers
    return given | {"x-signature-256": sign("POST", path, given, body, t)}


async def test_a_bearer_token_and_a_signature_are_both_checked(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "hooks.#")
    token = {"authorization": "Bearer t0ken"}
    good = signed("/events/hooks.github")
    async with client(settings, token=SecretStr("t0ken"), hmac_secret=SecretStr(SECRET)) as c:
        no_token = await c.post("/events/hooks.github", content=BODY, headers=good)
        no_sig = await c.post("/events/hooks.github", content=BODY, headers=HEADERS | token)
        body_only = await c.post(
            "/events/hooks.github",
            content=BODY,
            headers=HEADERS
            | token
            | {
                "x-signature-256": "sha256=" + hmac.new(SECRET.encode(), BODY, "sha256").hexdigest()
            },
        )
        accepted = await c.post("/events/hooks.github", content=BODY, headers=good | token)
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert no_sig.status_code == 401 and "missing signature header" in no_sig.json()["detail"]
    assert body_only.status_code == 401 and "signs the body only" in body_only.json()["detail"]
    assert accepted.status_code == 202, accepted.text
    answers = no_token.text + no_sig.text + body_only.text + accepted.text
    assert "t0ken" not in answers and SECRET not in answers
    assert len(await broker.take_all(queue, expect=1)) == 1


@pytest.mark.parametrize(
    ("path", "changed", "detail"),
    [
        ("/events/orders.created", {}, "used already"),
        ("/events/orders.cancelled", {}, "wrong signature"),
        ("/events/orders.created", {"idempotency-key": "order-o-2"}, "wrong signature"),
        ("/events/orders.created", {"x-correlation-id": "checkout-2"}, "wrong signature"),
        ("/events/orders.created", {"content-type": "application/json; v=2"}, "wrong signature"),
        ("/events", {"content-type": "application/x-ndjson"}, "wrong signature"),
    ],
    ids=[
        "twice",
        "other-routing-key",
        "other-idempotency-key",
        "other-correlation-id",
        "other-content-type",
        "to-the-batch-endpoint",
    ],
)
async def test_a_captured_signature_is_refused_on_any_other_request_and_a_second_time(
    broker: Broker, settings: Settings, path: str, changed: dict[str, str], detail: str
) -> None:
    queue = await sink(broker, "#")
    original = signed("/events/orders.created")
    async with client(settings, hmac_secret=SecretStr(SECRET)) as c:
        first = await c.post("/events/orders.created", content=BODY, headers=original)
        again = await c.post(path, content=BODY, headers=original | changed)
    assert first.status_code == 202, first.text
    assert again.status_code == 401, again.text
    assert detail in again.json()["detail"]
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["order-o-1"]


async def test_a_signature_outside_its_window_is_refused_and_one_inside_is_accepted(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "#")
    now, path = int(time.time()), "/events/orders.created"
    async with client(settings, hmac_secret=SecretStr(SECRET), signature_tolerance=60) as c:
        stale = await c.post(path, content=BODY, headers=signed(path, t=now - 90))
        future = await c.post(path, content=BODY, headers=signed(path, t=now + 90))
        recent = await c.post(path, content=BODY, headers=signed(path, t=now - 30))
        other_body = await c.post(path, content=b"{}", headers=signed(path, b"{}", t=now - 30))
    for refused in (stale, future):
        assert refused.status_code == 401
        assert "more than the tolerance of 60s" in refused.json()["detail"]
    assert recent.status_code == 202 and other_body.status_code == 202
    assert len(await broker.take_all(queue, expect=2)) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/events/orders.a%0Ab", b"{}"),
        ("/events/orders.a%0D%0Ab", b"{}"),
        ("/events/orders.a%00b", b"{}"),
        ("/events/orders.a%1Bb", b"{}"),
        ("/events/orders.a%7Fb", b"{}"),
        (
            "/events",
            b'{"routing_key": "orders.ok", "data": 1}\n'
            b'{"routing_key": "orders.\\r\\nx", "data": 2}',
        ),
        ("/events", b'{"routing_key": "orders.\\u0000", "data": 1}'),
    ],
    ids=["lf", "crlf", "nul", "esc", "del", "batch-crlf", "batch-nul"],
)
async def test_a_routing_key_with_a_control_character_is_400(
    broker: Broker, settings: Settings, path: str, body: bytes
) -> None:
    queue = await sink(broker, "#")
    async with client(settings, allowed_keys=("orders.#",)) as c:
        answer = await c.post(path, content=body)
    assert answer.status_code == 400, answer.text
    assert "control character (U+00" in answer.json()["detail"]
    assert await broker.count(queue) == 0


async def test_the_openapi_documents_sit_behind_the_same_auth_unless_set_otherwise(
    settings: Settings,
) -> None:
    token = {"authorization": "Bearer t0ken"}
    async with client(settings, token=SecretStr("t0ken")) as c:
        closed = [await c.get(p) for p in ("/openapi.json", "/docs", "/redoc")]
        opened = [await c.get(p, headers=token) for p in ("/openapi.json", "/docs")]
    assert [a.status_code for a in closed] == [401, 401, 404]
    assert [a.status_code for a in opened] == [200, 200]
    assert "/events/{routing_key}" in opened[0].json()["paths"]
    async with client(settings, hmac_secret=SecretStr(SECRET)) as c:
        unsigned = await c.get("/openapi.json")
        get = {"x-signature-256": sign("GET", "/openapi.json", {}, b"")}
        with_signature = await c.get("/openapi.json", headers=get)
    assert unsigned.status_code == 401 and with_signature.status_code == 200
    async with client(settings, token=SecretStr("t0ken"), docs="public") as c:
        assert (await c.get("/openapi.json")).status_code == 200
    async with client(settings, token=SecretStr("t0ken"), docs="off") as c:
        assert (await c.get("/openapi.json", headers=token)).status_code == 404
        assert (await c.get("/docs", headers=token)).status_code == 404


def test_uvicorn_gets_the_keep_alive_timeout_and_the_connection_cap(settings: Settings) -> None:
    http = HttpSettings(keep_alive_timeout=7, max_connections=33, header_timeout=2.5)
    config = server(create_app(settings), http).config
    assert (config.timeout_keep_alive, config.limit_concurrency) == (7, 33)
    assert vars(config.http)["header_timeout"] == 2.5


@asynccontextmanager
async def serving(settings: Settings, **env: str) -> AsyncIterator[int]:
    """A real ``eventworker serve`` process, listening; yields its port."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER, "serve", "--port", str(port), env=env_for(settings, **env)
    )
    try:
        for _ in range(100):  # until it listens, at most ~10 s
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert process.returncode is None
                await asyncio.sleep(0.1)
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def trickle(port: int, head: bytes, slowly: bytes, interval: float = 0.25) -> bytes | None:
    """Send ``head`` at once, then ``slowly`` a byte every ``interval`` seconds. What the
    server answered before it closed the connection; None when it never closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for byte in slowly:
            try:
                answer = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:  # still open
                writer.write(bytes([byte]))
                continue
            if answer:  # the rest, up to the close
                answer += await asyncio.wait_for(reader.read(), 10)
            return answer
        return None
    except ConnectionError:
        return b""
    finally:
        writer.close()


HEAD = b"POST /events/orders.created HTTP/1.1\r\nHost: ingress\r\n"
JSON_40 = b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"


async def test_slow_clients_are_cut_off(broker: Broker, settings: Settings) -> None:
    await sink(broker, "orders.#")
    timeouts = {"EVENTWORKER_HTTP__HEADER_TIMEOUT": "1", "EVENTWORKER_HTTP__BODY_TIMEOUT": "1"}
    async with serving(settings, **timeouts) as port:
        # Headers a byte at a time: closed before they are complete, with no answer.
        assert await trickle(port, b"", HEAD + JSON_40) == b""
        # The body a byte at a time: 408, and closed.
        answer = await trickle(port, HEAD + JSON_40, b"{" + b" " * 38 + b"}")
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert b"http.body_timeout" in answer
        # Nothing at all: closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 20) == b""
        writer.close()


async def test_requests_over_the_connection_cap_are_answered_503(
    broker: Broker, settings: Settings
) -> None:
    await sink(broker, "orders.#")
    async with serving(settings, EVENTWORKER_HTTP__MAX_CONNECTIONS="3") as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            over = await c.post("/events/orders.created", json={})
            for _, writer in idle:
                writer.close()
            for _ in range(50):  # until the server saw them go, at most ~5 s
                answer = await c.post("/events/orders.created", json={})
                if answer.status_code != 503:
                    break
                await asyncio.sleep(0.1)
    assert over.status_code == 503
    assert answer.status_code == 202, answer.text


async def test_the_shell_producer_example_gets_a_202(broker: Broker, settings: Settings) -> None:
    queue = await sink(broker, "orders.#")
    async with serving(settings, EVENTWORKER_HTTP__HMAC_SECRET=SECRET) as port:
        env = os.environ | {"SECRET": SECRET, "INGRESS": f"http://127.0.0.1:{port}"}
        script = str(EXAMPLES / "webhook_sender.sh")
        done = await asyncio.create_subprocess_exec(
            "sh", script, "o-7", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await done.communicate()
    assert done.returncode == 0, out
    assert b'"status":"confirmed"' in out
    assert [m.message_id for m in await broker.take_all(queue, expect=1)] == ["o-7-created"]


async def test_with_no_room_for_one_more_signature_the_answer_is_503_to_retry_later(
    broker: Broker, settings: Settings
) -> None:
    await sink(broker, "#")
    path = "/events/orders.created"
    async with client(settings, hmac_secret=SecretStr(SECRET), max_seen_signatures=1) as c:
        first = await c.post(path, content=BODY, headers=signed(path))
        full = await c.post(path, content=b"{}", headers=signed(path, b"{}"))
    assert first.status_code == 202
    assert full.status_code == 503 and full.headers["retry-after"] == "5"
    assert "http.max_seen_signatures" in full.json()["detail"]


def test_a_remembered_signature_is_forgotten_once_its_window_is_over() -> None:
    now = [1_000_000.0]
    verifier = Verifier(
        SECRET.encode(), tolerance=60, capacity=1, header_name="X-S", clock=lambda: now[0]
    )
    request = Signed("POST", b"/events/k", b"", b"", b"application/json", b"{}")
    verifier.verify(request.header(SECRET.encode(), 1_000_000), request)
    later = request.header(SECRET.encode(), 1_000_050)
    with pytest.raises(SignatureError) as full:
        verifier.verify(later, request)
    assert full.value.status == 503
    now[0] = 1_000_061  # the first one's window is over: it is forgotten, making room
    verifier.verify(later, request)
    with pytest.raises(SignatureError, match="used already"):
        verifier.verify(later, request)


@pytest.mark.parametrize(
    "header",
    [
        "t=\u00b2,v1=" + "a" * 64,
        "t=1,t=2,v1=" + "a" * 64,
        "t=1",
        "t=1,v1=xyz",
        "v1=" + "a" * 64,
        "t=1234567890123,v1=" + "a" * 64,
    ],
    ids=["superscript-digit", "two-timestamps", "no-v1", "not-hex", "no-t", "13-digits"],
)
def test_a_malformed_signature_header_is_refused_saying_what_is_expected(header: str) -> None:
    with pytest.raises(SignatureError, match=r"malformed X-S: expected t=<unix seconds>"):
        parse(header, "X-S")
