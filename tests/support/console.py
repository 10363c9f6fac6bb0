"""The operator console for a test: the app on this event loop, its poll running, and an HTTP
client that keeps its cookies (the CSRF token among them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from eventworker.console.app import create_app
from eventworker.console.auth import CSRF_COOKIE
from eventworker.handlers import Handler
from eventworker.settings import Settings
from tests.support.broker import registrations


@contextlib.asynccontextmanager
async def console_client(
    settings: Settings, *handlers: Handler, allow_actions: bool = True, **headers: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, registrations(*handlers), allow_actions=allow_actions)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=headers
        ) as client:
            yield client


async def csrf(client: httpx.AsyncClient) -> str:
    """The client's CSRF token (a first GET sets the cookie)."""
    if CSRF_COOKIE not in client.cookies:
        await client.get("/jobs")
    token: str = client.cookies[CSRF_COOKIE]
    return token


async def post(client: httpx.AsyncClient, url: str, **fields: Any) -> httpx.Response:
    """POST a form with the CSRF token."""
    return await client.post(url, data={"csrf": await csrf(client), **fields})
