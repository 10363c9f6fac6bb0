"""The console's actions (POST only, each with its CSRF token): sign-in, the confirmation of a
replay or purge, the replay or purge itself (operator role; run as a job), and export."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from loguru import logger

from eventworker.console import letters
from eventworker.console.auth import TOKEN_COOKIE
from eventworker.console.context import (
    Form,
    console,
    dead_letters_of,
    form,
    letter_filter,
    operator,
    render,
    user,
)
from eventworker.deadletters import operations as ops
from eventworker.deadletters.operations import DeadLetterQueue, Selection
from eventworker.errors import InvalidInputError
from eventworker.publishing.publisher import Publisher

router = APIRouter()
ACTIONS = ("replay", "purge")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", failed=False)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    given = await form(request)
    name = console(request).access.token_name(given.get("token"))
    if name is None:
        return render(request, "login.html", status_code=401, failed=True)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        TOKEN_COOKIE,
        console(request).access.session(name),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    logger.bind(audit=True).info("console audit: {} signed in", name)
    return response


async def _targets(request: Request, dlq: DeadLetterQueue, given: Form) -> tuple[str, list[str]]:
    """What a form asks to act on: ``all``, or the ids of the selected or filtered letters."""
    scope = given.get("scope") or given.get("do").partition(":")[2]
    if scope == "all":
        return "all", []
    if scope == "selected":
        ids = given.all("ids")
        if not ids:
            raise HTTPException(400, "no dead letter selected")
        return "selected", sorted(set(ids))
    if scope == "filtered":
        chosen = letter_filter(given.get)
        if not chosen.active:
            raise HTTPException(400, "no filter set: set one, or act on all")
        state = console(request)
        found = await letters.listing(
            await state.fleet.connection(), dlq, limit=state.settings.console.scan_limit
        )
        now = datetime.now(UTC)
        ids = sorted({x.letter.id for x in found if x.letter.id and chosen(x.letter, now)})
        return "filtered", ids
    raise HTTPException(400, f"scope {scope!r}: expected selected, filtered or all")


@router.post("/handlers/{name}/confirm", response_class=HTMLResponse)
async def confirm(request: Request, name: str) -> HTMLResponse:
    """The confirmation step: what the action would take, and the button that does it."""
    given = await form(request)
    operator(request)
    action = given.get("action") or given.get("do").partition(":")[0]
    if action not in ACTIONS:
        raise HTTPException(400, f"action {action!r}: expected replay or purge")
    dlq = dead_letters_of(request, name)
    scope, ids = await _targets(request, dlq, given)
    if scope == "all" and action == "purge":
        raise HTTPException(400, "purge takes selected or filtered dead letters, not all")
    depth = console(request).fleet.depths.get(dlq.queue)
    return render(
        request,
        "confirm.html",
        handler=name,
        action=action,
        scope=scope,
        ids=ids,
        depth=depth.messages if depth else None,
    )


async def _act(request: Request, name: str, action: str) -> Response:
    given = await form(request)
    who = operator(request)
    dlq = dead_letters_of(request, name)
    if given.get("confirmed") != "yes":
        raise HTTPException(400, "not confirmed: use the confirmation page")
    scope = given.get("scope")
    ids = given.all("ids")
    if scope == "all" and action == "replay":
        select, what = Selection(), "all"
    elif ids:
        select, what = Selection(frozenset(ids)), f"{len(ids)} selected"
    else:
        raise HTTPException(400, "nothing to act on")
    state = console(request)
    job = state.jobs.start(
        "replay" if action == "replay" else "purge",
        dlq,
        select,
        user=who.name,
        what=what,
        connection=await state.fleet.connection(),
        publish_timeout=state.settings.publish_timeout,
        on_end=lambda: state.fleet.forget_sample(name),
    )
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/handlers/{name}/replay")
async def replay(request: Request, name: str) -> Response:
    return await _act(request, name, "replay")


@router.post("/handlers/{name}/purge")
async def purge(request: Request, name: str) -> Response:
    return await _act(request, name, "purge")


@router.post("/handlers/{name}/export")
async def export(request: Request, name: str) -> Response:
    """Every dead letter of the handler as NDJSON (``eventworker dlq export``'s records)."""
    await form(request)
    dlq = dead_letters_of(request, name)
    state = console(request)
    out = io.BytesIO()
    written = await ops.export(await state.fleet.connection(), dlq, out, limit=None)
    logger.bind(audit=True).info(
        "console audit: {} exported {} dead letter(s) of handler {!r}",
        user(request).name,
        written,
        name,
    )
    filename = f"{name}-dead-letters.ndjson".replace('"', "")
    return Response(
        out.getvalue(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/publish", response_class=HTMLResponse)
async def publish(request: Request) -> HTMLResponse:
    """A test event to the exchange, confirmed (``console.allow_publish`` and the operator role)."""
    given = await form(request)
    who = operator(request)
    settings = console(request).settings
    if not settings.console.allow_publish:
        raise HTTPException(403, "publishing from the console is off (console.allow_publish)")
    key = given.get("routing_key")
    if not key or "*" in key or "#" in key:
        raise HTTPException(400, f"routing key {key!r}: give a concrete key, without * or #")
    try:
        data = orjson.loads(given.get("data") or "null")
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the event is not JSON: {exc}") from None
    publisher = Publisher.from_settings(settings, source="console")
    try:
        result = await publisher.publish(key, data)
    except InvalidInputError as exc:
        raise HTTPException(400, str(exc)) from None
    finally:
        await publisher.close()
    logger.bind(audit=True).info(
        "console audit: {} published test event {} to {!r}", who.name, result.event_id, key
    )
    return render(request, "published.html", key=key, event_id=result.event_id)
