"""The HTTP ingress under test: an app on the test's settings behind an HTTP client, a free port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from eventworker.publishing.ingress import create_app
from eventworker.settings import Settings


@asynccontextmanager
async def client(settings: Settings, **http: object) -> AsyncIterator[httpx.AsyncClient]:
    """The ingress app in process (its publisher connects on the first request)."""
    configured = settings.model_copy(
        update={"http": settings.http.model_copy(update=http), "max_body_bytes": 1000}
    )
    app = create_app(configured)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
