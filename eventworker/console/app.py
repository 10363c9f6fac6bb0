"""The console's web application (FastAPI): pages and actions, static files, sign-in, the CSRF
cookie and security headers on every answer, and the poll of queue depths while it runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from eventworker.console import actions, pages
from eventworker.console.auth import (
    CSRF_COOKIE,
    SECURITY_HEADERS,
    Access,
    new_csrf_token,
)
from eventworker.console.context import Console, render
from eventworker.console.fleet import Fleet
from eventworker.errors import EventworkerError
from eventworker.plugins.discovery import Registration
from eventworker.settings import Settings

#: Host names a console without authentication answers to.
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
#: Paths served before sign-in.
OPEN_PATHS = ("/login", "/static/")


def create_app(
    settings: Settings, registrations: Sequence[Registration], *, allow_actions: bool = False
) -> FastAPI:
    """The console for ``registrations`` on the broker of ``settings``."""
    state = Console(
        settings,
        Fleet(settings, registrations),
        Access(settings.console, allow_actions=allow_actions),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(state.fleet.poll(state.stop))
        try:
            yield
        finally:
            state.stop.set()
            running = [j.task for j in state.jobs.all.values() if j.task and not j.task.done()]
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(poller, *running, return_exceptions=True)
            await state.fleet.close()

    app = FastAPI(
        title="eventworker console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = state
    if not state.access.authenticates:
        # Without authentication only this machine may use the console: a page of another site
        # whose name resolves to 127.0.0.1 (DNS rebinding) is refused by its Host header.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOCAL_NAMES))
    app.mount(
        "/static",
        StaticFiles(directory=str(files("eventworker.console") / "static")),
        name="static",
    )
    app.include_router(pages.router)
    app.include_router(actions.router)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.user = state.access.user(
            {k.lower(): v for k, v in request.headers.items()}, dict(request.cookies)
        )
        csrf = request.cookies.get(CSRF_COOKIE)
        request.state.csrf = csrf or new_csrf_token()
        if request.state.user is None and not request.url.path.startswith(OPEN_PATHS):
            if state.access.needs_sign_in and request.method == "GET":
                response: Response = RedirectResponse("/login", status_code=303)
            else:
                response = PlainTextResponse("sign-in required", status_code=401)
        else:
            response = await call_next(request)
        if not csrf:
            response.set_cookie(
                CSRF_COOKIE,
                request.state.csrf,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.state.user is None:
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return render(request, "error.html", status_code=exc.status_code, message=exc.detail)

    @app.exception_handler(EventworkerError)
    async def broker_error(request: Request, exc: EventworkerError) -> Response:
        return render(request, "error.html", status_code=503, message=str(exc))

    return app
