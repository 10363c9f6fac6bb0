"""What every page and action of the console shares: its state, the templates (Jinja2,
autoescaped), the signed-in user, and forms read with their CSRF token checked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from eventworker.console.auth import CSRF_COOKIE, CSRF_FIELD, Access, User, csrf_ok
from eventworker.console.fleet import Fleet
from eventworker.console.jobs import Jobs
from eventworker.console.letters import Filter
from eventworker.deadletters.operations import DeadLetterQueue
from eventworker.settings import Settings

#: Largest form body read (ids of selected dead letters and filters).
MAX_FORM_BYTES = 1_048_576

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("eventworker.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(slots=True)
class Console:
    """The console's state for the life of the process."""

    settings: Settings
    fleet: Fleet
    access: Access
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: Jobs = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = Jobs(self.stop)


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def user(request: Request) -> User:
    found: User = request.state.user
    return found


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page of ``templates/``, with the user, the CSRF token and the settings at hand."""
    page = TEMPLATES.get_template(name).render(
        user=user(request),
        csrf=request.state.csrf,
        poll_seconds=console(request).settings.console.poll_interval,
        path=request.url.path,
        **values,
    )
    return HTMLResponse(page, status_code=status_code)


class Form:
    """A urlencoded form, its CSRF token checked."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def all(self, name: str) -> list[str]:
        return [v for v in self._fields.get(name, []) if v]


async def form(request: Request) -> Form:
    """The request's form.

    Raises:
        HTTPException: 413 for a body too large, 403 when the CSRF token is missing or does not
            match the cookie.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    found = Form(fields)
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), found.get(CSRF_FIELD) or None):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return found


def operator(request: Request) -> User:
    """The user, who must have the operator role.

    Raises:
        HTTPException: 403 when the console is read-only.
    """
    found = user(request)
    if not found.operator:
        raise HTTPException(
            403, "the console is read-only: start it with --allow-actions (console.allow_actions)"
        )
    return found


def dead_letters_of(request: Request, name: str) -> DeadLetterQueue:
    """The dead-letter queue of handler ``name``, or the unrouted queue by its name.

    Raises:
        HTTPException: 404, no such handler.
    """
    found = console(request).fleet.dead_letter_queues.get(name)
    if found is None:
        raise HTTPException(404, f"no handler {name!r} is installed here")
    return found


def letter_filter(get: Callable[[str], str]) -> Filter:
    """The dead-letter filter of a query or form (``get`` reads one field; age in minutes).

    Raises:
        HTTPException: 400, an age that is no number.
    """
    minutes = get("min_age")
    try:
        min_age = float(minutes) * 60 if minutes else None
    except ValueError:
        raise HTTPException(400, f"min_age {minutes!r}: expected minutes, like 30") from None
    return Filter(reason=get("reason"), id=get("id"), min_age=min_age, text=get("text"))
