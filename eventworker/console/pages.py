"""The console's pages (GET only, none changes anything): handlers, one handler's dead letters,
one dead letter, workers, the event catalogue, jobs, and the fragments the pages refresh."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from eventworker.console import letters
from eventworker.console.context import console, dead_letters_of, letter_filter, render, user
from eventworker.console.fleet import Fleet, Member
from eventworker.deadletters.letter import age_label as age
from eventworker.deadletters.operations import DeadLetterQueue, DeadLetterStats
from eventworker.plugins import catalogue
from eventworker.topology.layout import delay_label

router = APIRouter()
#: Dead letters per page.
PAGE_SIZE = 50


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}/min"


def _row(fleet: Fleet, m: Member, sample: DeadLetterStats | None) -> dict[str, Any]:
    depth = fleet.depths.get(m.route.queue)
    dead = fleet.depths.get(m.dlq.queue)
    plugin = m.registration.plugin
    tiers = [
        (delay_label(d), fleet.depths.get(m.route.retry_queues[d]))
        for d in sorted(set(m.route.policy.delays))
    ]
    return {
        "name": m.name,
        "plugin": plugin.entry_point,
        "distribution": f"{plugin.distribution} {plugin.version}".strip(),
        "bindings": ", ".join(m.route.handler.bindings),
        "queue": m.route.queue,
        "exists": depth is not None and depth.exists,
        "ready": depth.messages if depth else None,
        "unacked": fleet.unacked.get(m.route.queue),
        "consumers": depth.consumers if depth else None,
        "dead": dead.messages if dead else None,
        "oldest": age(sample.oldest_age) if sample else "-",
        "reasons": ", ".join(f"{r} {n}" for r, n in sample.reasons) if sample else "",
        "tiers": [(label, t.messages if t else None) for label, t in tiers],
        "ready_rate": _rate(fleet.history.per_minute(m.route.queue)),
        "dead_rate": _rate(fleet.history.per_minute(m.dlq.queue)),
        "no_consumer": depth is not None and depth.exists and not depth.consumers,
        "dead_growing": fleet.history.growing(m.dlq.queue),
    }


async def _rows(request: Request, *, sample: bool) -> list[dict[str, Any]]:
    fleet = console(request).fleet
    if fleet.polled_at is None:
        await fleet.refresh()
    rows = []
    for m in fleet.members.values():
        dead = fleet.depths.get(m.dlq.queue)
        found = await fleet.sample(m) if sample and dead is not None and dead.messages else None
        rows.append(_row(fleet, m, found))
    return rows


def _polled(fleet: Fleet) -> str:
    if fleet.polled_at is None:
        return "never"
    return datetime.fromtimestamp(fleet.polled_at, UTC).strftime("%H:%M:%S UTC")


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    fleet = console(request).fleet
    rows = await _rows(request, sample=True)
    warn = await fleet.reads_count() if any(r["dead"] for r in rows) else False
    unrouted = fleet.depths.get(fleet.unrouted.queue) if fleet.unrouted else None
    return render(
        request,
        "overview.html",
        rows=rows,
        polled=_polled(fleet),
        reads_count=warn,
        unrouted=fleet.unrouted,
        unrouted_count=unrouted.messages if unrouted else None,
    )


@router.get("/fragments/handlers", response_class=HTMLResponse)
async def overview_rows(request: Request) -> HTMLResponse:
    """The handler rows alone, for the live refresh (depths only: no dead letter is read)."""
    fleet = console(request).fleet
    rows = []
    for m in fleet.members.values():
        cached = fleet.cached_sample(m.name)
        rows.append(_row(fleet, m, cached))
    return render(request, "_handler_rows.html", rows=rows, polled=_polled(fleet))


@router.get("/handlers/{name}", response_class=HTMLResponse)
async def dead_letters(request: Request, name: str) -> HTMLResponse:
    state = console(request)
    dlq = dead_letters_of(request, name)
    chosen = letter_filter(lambda key: request.query_params.get(key, "").strip())
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    connection = await state.fleet.connection()
    depth = await _depth(state.fleet, dlq)
    found = (
        await letters.listing(connection, dlq, limit=state.settings.console.scan_limit)
        if depth
        else []
    )
    now = datetime.now(UTC)
    matching = [x for x in found if chosen(x.letter, now)]
    start = (page - 1) * PAGE_SIZE
    return render(
        request,
        "letters.html",
        handler=name,
        queue=dlq.queue,
        depth=depth,
        read=len(found),
        letters=matching[start : start + PAGE_SIZE],
        matching=len(matching),
        page=page,
        pages=max(1, -(-len(matching) // PAGE_SIZE)),
        reasons=sorted({x.letter.reason for x in found}),
        filter=chosen,
        previous=_page_url(request, page - 1) if page > 1 else None,
        following=_page_url(request, page + 1) if start + PAGE_SIZE < len(matching) else None,
        min_age=request.query_params.get("min_age", ""),
        age=lambda p: age(p.age(now)),
    )


def _page_url(request: Request, page: int) -> str:
    return "?" + urlencode({**request.query_params, "page": str(page)})


async def _depth(fleet: Fleet, dlq: DeadLetterQueue) -> int:
    await fleet.refresh()
    dead = fleet.depths.get(dlq.queue)
    return dead.messages or 0 if dead else 0


@router.get("/handlers/{name}/letter", response_class=HTMLResponse)
async def dead_letter(request: Request, name: str) -> HTMLResponse:
    state = console(request)
    dlq = dead_letters_of(request, name)
    message_id = request.query_params.get("id") or None
    try:
        position = int(request.query_params.get("position", "-1"))
    except ValueError:
        position = -1
    opened = await letters.open_letter(
        await state.fleet.connection(),
        dlq,
        message_id=message_id,
        position=None if message_id else position,
        scan=state.settings.console.scan_limit,
        body_limit=state.settings.console.body_limit,
    )
    if opened is None:
        raise HTTPException(404, "no such dead letter (replayed or purged meanwhile?)")
    now = datetime.now(UTC)
    return render(
        request,
        "letter.html",
        handler=name,
        opened=opened,
        p=opened.letter,
        age=age(opened.letter.age(now)),
    )


@router.get("/workers", response_class=HTMLResponse)
async def workers(request: Request) -> HTMLResponse:
    fleet = console(request).fleet
    if fleet.polled_at is None:
        await fleet.refresh()
    rows = [_row(fleet, m, None) for m in fleet.members.values()]
    by_connection: dict[str, list[Any]] = {}
    for c in fleet.consumers:
        by_connection.setdefault(c.connection or "(unnamed connection)", []).append(c)
    return render(
        request,
        "workers.html",
        rows=rows,
        polled=_polled(fleet),
        connections=by_connection,
        management=bool(fleet.settings.management_url.get_secret_value()),
        management_error=fleet.management_error,
    )


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each routing-key pattern of the AsyncAPI document: who consumes it (or publishes it) and
    the JSON Schema of its payload."""
    schemas = doc["components"]["schemas"]
    by_key: dict[str, dict[str, Any]] = {}
    for op in doc["operations"].values():
        channel = doc["channels"][
            op["channel"]["$ref"].rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        ]
        message = next(iter(channel["messages"]), catalogue.ANY_EVENT)
        schema = schemas.get(message)
        who = op["x-eventworker-handler"]["name"]
        keys = (
            channel.get("x-eventworker-binding-keys", [])
            if op["action"] == "receive"
            else [channel["address"]]
        )
        for key in keys:
            entry = by_key.setdefault(
                key, {"key": key, "consumers": [], "publishers": [], "schemas": {}}
            )
            entry["consumers" if op["action"] == "receive" else "publishers"].append(who)
            entry["schemas"][message] = (
                json.dumps(schema, indent=2) if schema is not None else "any JSON value"
            )
    return [by_key[k] for k in sorted(by_key)]


@router.get("/catalogue", response_class=HTMLResponse)
async def event_catalogue(request: Request) -> HTMLResponse:
    fleet = console(request).fleet
    doc = catalogue.document(fleet.registrations, fleet.routes, fleet.settings)
    return render(
        request,
        "catalogue.html",
        entries=_entries(doc),
        title=doc["info"]["title"],
        can_publish=fleet.settings.console.allow_publish and user(request).operator,
    )


@router.get("/catalogue.json")
async def catalogue_json(request: Request) -> JSONResponse:
    fleet = console(request).fleet
    return JSONResponse(catalogue.document(fleet.registrations, fleet.routes, fleet.settings))


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(request: Request) -> HTMLResponse:
    found = list(reversed(console(request).jobs.all.values()))
    return render(request, "jobs.html", jobs=found)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: int) -> HTMLResponse:
    found = console(request).jobs.all.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    fragment = request.headers.get("hx-request") == "true"
    return render(request, "_job.html" if fragment else "job.html", job=found, now=time.time())
