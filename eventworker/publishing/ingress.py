"""The HTTP ingress: events in over HTTP, answered 202 only once the broker confirmed them.

``POST /events/{routing_key}`` takes one JSON event; ``POST /events`` takes NDJSON, one
``{"routing_key": ..., "data": ..., "id": ...}`` object per line. Input is checked before
anything is published: size (413, before parsing), a body sent too slowly (408),
authentication (401: bearer token, and the request signature of
:mod:`eventworker.publishing.signature`), JSON and routing key (400), the allow-list of
routing-key patterns (403), content type (415).
An event no queue is bound for is 422; a broker that is unreachable, refuses or does not confirm
in time is 503 with ``Retry-After``. The ``Idempotency-Key`` header becomes the event id, so a
client that retries after a lost answer produces a duplicate its consumers can recognise.
A delay (``?delay=90s`` or the ``X-Delay`` header) or a time to deliver at (``?at=`` or
``X-Deliver-At``, ISO 8601 with a time zone) has the broker hold the events that long first
(the delay levels, :mod:`eventworker.topology.delays`); a bad one is 400.
``/docs`` and ``/openapi.json`` sit behind the same authentication unless ``http.docs`` says
otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger

from eventworker import envelope
from eventworker.errors import BrokerError, ConfigError, InvalidInputError
from eventworker.handlers import check_binding_key
from eventworker.publishing._ingress_auth import RETRY_AFTER, Guard
from eventworker.publishing.channel import PublishResult
from eventworker.publishing.publisher import NewEvent, Publisher
from eventworker.settings import HttpSettings, Settings
from eventworker.topology import delays
from eventworker.topology.topic import compile_bindings

_JSON = {"application/json"}
_NDJSON = {"application/x-ndjson", "application/ndjson", "application/jsonl"}
#: Status per publish outcome: only "confirmed" is accepted.
_STATUS = {"confirmed": 202, "unroutable": 422}


def check_allowed_keys(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Raises ConfigError for a pattern that is no valid binding key."""
    for pattern in patterns:
        try:
            check_binding_key(pattern)
        except ValueError as exc:
            raise ConfigError(f"http.allowed_keys: {exc}") from None
    return patterns


def _fail(status: int, detail: str, **headers: str) -> HTTPException:
    return HTTPException(status, detail, headers=headers or None)


def _media(request: Request) -> str | None:
    value = request.headers.get("content-type")
    return value.split(";")[0].strip().lower() if value else None


async def _body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (before any
    parsing, and without reading the rest of an oversized upload), and with 408 when it has
    not all arrived within ``timeout`` seconds; both close the connection."""
    close = {"Connection": "close"}  # the rest of the body is never read
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _fail(413, f"body of {declared} bytes exceeds the limit of {limit}", **close)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _fail(413, f"body exceeds the limit of {limit} bytes", **close)
                chunks.append(chunk)
    except TimeoutError:
        raise _fail(
            408, f"the body did not arrive within {timeout:g}s (http.body_timeout)", **close
        ) from None
    return b"".join(chunks)


def _control_character(key: str) -> str | None:
    """The first control character (C0, DEL, C1) in ``key``, as U+XXXX; None when there is
    none. CR and LF in a routing key would forge lines in logs and in headers built from it."""
    for char in key:
        if unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


#: Where a request may ask for a delay: (where, what it holds), query parameters first.
_HOLDS = (
    ("query", "delay"),
    ("query", "at"),
    ("header", "X-Delay"),
    ("header", "X-Deliver-At"),
)


def _asked_hold(request: Request) -> str:
    """The delay the request asks for, as the signature covers it: ``delay=<value>`` or
    ``at=<value>`` (the value stripped), "" for none; each one given, on its own line, when it
    asks in more than one place (signed as they are; refused by :func:`_hold_seconds`)."""
    asked = [
        f"{'at' if name in ('at', 'X-Deliver-At') else 'delay'}={value.strip()}"
        for where, name in _HOLDS
        if (value := (request.query_params if where == "query" else request.headers).get(name))
        is not None
    ]
    return "\n".join(asked)


def _hold_seconds(hold: str) -> int:
    """Whole seconds to hold the events for ``hold`` (from :func:`_asked_hold`); 0 for none.

    Raises:
        HTTPException: 400 naming the parameter and what is wrong with its value, or that
            the request asks for a delay in more than one place.
    """
    if not hold:
        return 0
    if "\n" in hold:
        raise _fail(400, "give one delay: ?delay, ?at, X-Delay or X-Deliver-At, not several")
    kind, _, value = hold.partition("=")
    try:
        if kind == "at":
            return delays.seconds(at=delays.parse_time(value))
        return delays.parse_duration(value)
    except ValueError as exc:
        raise _fail(400, f"{kind} {exc}") from None


class Ingress:
    """The checks and the publishing behind the routes; one per app."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self.http: HttpSettings = settings.http
        self.allowed = compile_bindings(check_allowed_keys(settings.http.allowed_keys))
        self.max_body_bytes = settings.max_body_bytes
        self.publisher = publisher
        self.guard = Guard(settings.http)

    def check_key(self, routing_key: str, where: str = "") -> None:
        control = _control_character(routing_key)
        if control is not None:
            raise _fail(400, f"{where}the routing key holds a control character ({control})")
        try:
            envelope.check_routing_key(routing_key)
        except ValueError as exc:
            raise _fail(400, f"{where}{exc}") from None
        if not self.allowed.matches(routing_key):
            raise _fail(403, f"{where}routing key {routing_key[:100]!r} is not allowed here")

    async def publish(self, events: list[NewEvent]) -> list[PublishResult]:
        try:
            return await self.publisher.publish_many(events)
        except InvalidInputError as exc:  # id, header or size problems found by the publisher
            raise _fail(400, str(exc)) from None

    async def one(self, request: Request, routing_key: str) -> JSONResponse:
        self.guard.authenticate(request)
        body = await _body(request, self.max_body_bytes, self.http.body_timeout)
        hold = _asked_hold(request)
        self.guard.verify(request, body, hold)
        if _media(request) not in (None, *_JSON):
            raise _fail(415, "send the event as application/json")
        self.check_key(routing_key)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _fail(400, f"invalid JSON: {exc}") from None
        event = NewEvent(
            routing_key,
            data,
            id=request.headers.get("idempotency-key") or None,
            correlation_id=request.headers.get("x-correlation-id") or None,
            delay=_hold_seconds(hold) or None,
        )
        [result] = await self.publish([event])
        return _answer([result], single=True)

    async def batch(self, request: Request) -> JSONResponse:
        self.guard.authenticate(request)
        body = await _body(request, self.http.max_batch_bytes, self.http.body_timeout)
        hold = _asked_hold(request)
        self.guard.verify(request, body, hold)
        if _media(request) not in (None, *_NDJSON):
            raise _fail(415, "send the batch as application/x-ndjson, one event per line")
        lines = [(n, line) for n, line in enumerate(body.splitlines(), 1) if line.strip()]
        if not lines:
            raise _fail(400, "the batch holds no event")
        if len(lines) > self.http.max_batch_events:
            raise _fail(
                413, f"{len(lines)} events exceed the limit of {self.http.max_batch_events}"
            )
        key = request.headers.get("idempotency-key")
        events = [self._line(n, line, key) for n, line in lines]
        seconds = _hold_seconds(hold)
        if seconds:
            events = [dataclasses.replace(e, delay=seconds) for e in events]
        return _answer(await self.publish(events), single=False)

    def _line(self, n: int, line: bytes, batch_key: str | None) -> NewEvent:
        where = f"line {n}: "
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _fail(400, f"{where}invalid JSON: {exc}") from None
        if not isinstance(item, dict) or not isinstance(item.get("routing_key"), str):
            raise _fail(400, f'{where}expected {{"routing_key": "...", "data": ...}}')
        if "data" not in item or set(item) - {"routing_key", "data", "id", "correlation_id"}:
            raise _fail(
                400, f"{where}fields are routing_key, data, and optional id, correlation_id"
            )
        self.check_key(item["routing_key"], where)
        event_id = item.get("id") or (f"{batch_key}-{n}" if batch_key else None)
        correlation = item.get("correlation_id")
        if not isinstance(event_id, str | None) or not isinstance(correlation, str | None):
            raise _fail(400, f"{where}id and correlation_id must be strings")
        return NewEvent(item["routing_key"], item["data"], id=event_id, correlation_id=correlation)


def _answer(results: list[PublishResult], *, single: bool) -> JSONResponse:
    """202 when every event was confirmed; else 503 when any may succeed on a retry, else 422.
    The body lists each event's id and outcome, so a client can retry the failed ones."""
    rows = [{"id": r.event_id, "status": r.status, "detail": r.detail} for r in results]
    statuses = {_STATUS.get(r.status, 503) for r in results}
    status = 503 if 503 in statuses else max(statuses)
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    content: dict[str, Any] = rows[0] if single else {"results": rows}
    return JSONResponse(content, status_code=status, headers=headers)


_DELAY = "Have the broker hold the event(s) this long first: 90s, 15m, 2h, 3d (delay_levels)."
_AT = (
    "Deliver at this ISO 8601 time with a time zone (2027-01-01T09:00:00Z; in a query "
    "string, percent-encode + as %2B); a time past delivers at once (delay_levels)."
)
#: The delay parameters in the OpenAPI document (read from the request by ``_asked_hold``).
HOLD_PARAMETERS = [
    {
        "name": name,
        "in": where,
        "required": False,
        "schema": {"type": "string"},
        "description": text,
    }
    for (where, name), text in zip(_HOLDS, (_DELAY, _AT, _DELAY, _AT), strict=True)
]


def _warn_if_open(http: HttpSettings) -> None:
    try:
        loopback = ipaddress.ip_address(http.host).is_loopback
    except ValueError:
        loopback = http.host == "localhost"
    if not loopback and http.token is None and http.hmac_secret is None:
        logger.warning(
            "HTTP ingress on {} without http.token or http.hmac_secret: anyone who reaches "
            "the port can publish events",
            http.host,
        )


def create_app(settings: Settings, *, publisher: Publisher | None = None) -> FastAPI:
    """The ingress as an ASGI app (FastAPI); ``eventworker serve`` runs it with uvicorn.

    The publisher connects at start; when the broker is down, the app still starts and answers
    503 until it can publish.

    Raises:
        ConfigError: an allow-list pattern is not a valid binding key.
    """
    pub = publisher or Publisher.from_settings(
        settings, source="eventworker-http", reconnect_timeout=settings.connect_timeout
    )
    ingress = Ingress(settings, pub)
    _warn_if_open(settings.http)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await pub.open()
        except BrokerError as exc:
            logger.warning("broker not reachable yet ({}); answering 503 until it is", exc)
        yield
        await pub.close()

    public = settings.http.docs == "public"
    app = FastAPI(
        title="eventworker HTTP ingress",
        summary="Publish events to RabbitMQ; 202 only after the broker confirmed them.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if public else None,
        docs_url="/docs" if public else None,
        redoc_url=None,
    )
    responses: dict[int | str, dict[str, Any]] = {
        202: {"description": "Confirmed by the broker"},
        400: {"description": "Invalid JSON, routing key, id, header or delay"},
        401: {"description": "Bearer token or signature missing, wrong, stale or used"},
        403: {"description": "Routing key not in http.allowed_keys"},
        408: {"description": "The body did not arrive within http.body_timeout"},
        413: {"description": "Body over the size limit"},
        415: {"description": "Wrong content type"},
        422: {"description": "Unroutable: no queue is bound for the routing key"},
        503: {"description": "Broker unreachable, refused it, or no confirm in time"},
    }

    @app.post(
        "/events/{routing_key}",
        status_code=202,
        responses=responses,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "parameters": HOLD_PARAMETERS,
        },
    )
    async def publish_event(routing_key: str, request: Request) -> JSONResponse:
        """Publish one event: the body (any JSON value) is its data. ``Idempotency-Key``
        becomes its id, ``X-Correlation-Id`` its correlation id. A delay or a time to
        deliver at (at most one of the four) has the broker hold it first."""
        return await ingress.one(request, routing_key)

    @app.post(
        "/events",
        status_code=202,
        responses=responses,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            },
            "parameters": HOLD_PARAMETERS,
        },
    )
    async def publish_batch(request: Request) -> JSONResponse:
        """Publish a batch: one ``{"routing_key", "data", "id"?, "correlation_id"?}`` object
        per line. With ``Idempotency-Key: K``, a line without id gets ``K-<line number>``. A
        delay or a time to deliver at holds every event of the batch."""
        return await ingress.batch(request)

    if settings.http.docs == "auth":

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> JSONResponse:
            ingress.guard.docs(request)
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False)
        async def docs(request: Request) -> HTMLResponse:
            ingress.guard.docs(request)
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        """Whether the publisher currently holds a connection to the broker."""
        return {"broker_connected": pub.connected}

    return app
