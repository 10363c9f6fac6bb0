"""``eventworker dlq``: see what failed and why, and put it back.

This module holds the group and the commands that leave messages in place (ls, show, export);
``dlq_replay`` the ones that take them out (replay, purge). HANDLER is a handler's name as
``eventworker handlers`` lists it, or the name of the unrouted queue.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from eventworker.commands import config_option, errors, examples, url_option
from eventworker.commands._deadletters import age, dead_letter_queues, line, run
from eventworker.errors import InvalidInputError
from eventworker.settings import load_settings

if TYPE_CHECKING:
    from eventworker.deadletters.letter import Letter
    from eventworker.deadletters.operations import Connection, DeadLetterQueue, DeadLetterStats


def _row(p: Letter, now: datetime) -> dict[str, Any]:
    return {
        "id": p.id,
        "routing_key": p.routing_key,
        "reason": p.reason,
        "exception": p.exception,
        "error": p.error,
        "attempts": p.attempts,
        "handler": p.handler,
        "host": p.host,
        "first_failure": p.first_failure,
        "last_failure": p.last_failure,
        "dead_lettered_at": p.dead_lettered_at.isoformat() if p.dead_lettered_at else None,
        "age_seconds": p.age(now),
        "replays": p.replays,
        "size": p.size,
        "preview": p.preview,
        "header_base64": p.header_base64,
        "traceback": p.traceback or None,
    }


@examples(
    "eventworker dlq ls",
    "eventworker dlq show send_welcome_mail",
    "eventworker dlq replay send_welcome_mail --reason exception",
)
@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay, purge and export them.

    HANDLER is a handler's name as `eventworker handlers` lists it, or the unrouted queue's
    name. Works over AMQP alone, no management plugin needed.
    """


@examples(
    "eventworker dlq ls",
    "eventworker dlq ls --json --sample 0",
)
@dlq.command("ls")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@click.option(
    "--sample",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="Messages read per queue for the oldest age and top reasons (0: count only).",
)
@config_option
@url_option
def list_queues(as_json: bool, sample: int, config: str | None, url: str | None) -> None:
    """Every dead-letter queue (and the unrouted queue): count, oldest age, top reasons."""
    from eventworker.deadletters import operations as ops

    with errors():
        settings = load_settings(config, url=url)
        dlqs = dead_letter_queues(settings, ())

        async def gather(connection: Connection, stop: asyncio.Event) -> list[DeadLetterStats]:
            return [await ops.stats(connection, p, sample=sample, stop=stop) for p in dlqs]

        rows = run(settings, gather)
    if as_json:
        click.echo(json.dumps([_stats_row(s) for s in rows], indent=2))
        return
    if not rows:
        click.echo("no handlers installed and no unrouted queue configured")
        return
    click.echo(f"{'HANDLER':<24} {'QUEUE':<40} {'MESSAGES':>8}  {'OLDEST':>7}  TOP REASONS")
    for s in rows:
        count = f"{s.count:>8}" if s.exists else f"{'absent':>8}"
        reasons = ", ".join(f"{reason} {n}" for reason, n in s.reasons)
        if s.count > s.sampled and s.reasons:
            reasons += f" (of the first {s.sampled})"
        elif s.count and not s.sampled:
            reasons = "(not sampled: see `eventworker dlq show`)"
        click.echo(
            f"{s.dlq.label:<24} {s.dlq.queue:<40} {count}  {age(s.oldest_age):>7}  "
            f"{reasons}".rstrip()
        )


def _stats_row(s: DeadLetterStats) -> dict[str, Any]:
    return {
        "handler": s.dlq.label,
        "queue": s.dlq.queue,
        "exists": s.exists,
        "messages": s.count,
        "oldest_age_seconds": s.oldest_age,
        "top_reasons": [{"reason": r, "count": n} for r, n in s.reasons],
        "sampled": s.sampled,
    }


@examples(
    "eventworker dlq show send_welcome_mail --limit 5",
    "eventworker dlq show --json | jq '.[].reason'",
)
@dlq.command("show")
@click.argument("handler", required=False)
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--preview",
    type=click.IntRange(0, 10_000),
    default=80,
    show_default=True,
    help="Characters of each body shown, control characters escaped (0: none).",
)
@click.option(
    "--traceback",
    "with_traceback",
    is_flag=True,
    help="Print each one's whole traceback (the x-eventworker-traceback header).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@config_option
@url_option
def show(
    handler: str | None,
    limit: int,
    preview: int,
    with_traceback: bool,
    as_json: bool,
    config: str | None,
    url: str | None,
) -> None:
    """The first dead letters of HANDLER (of every queue when omitted), left in place.

    With --traceback, each one's traceback as the worker recorded it (its last frames, no local
    variables); the JSON always has it, as "traceback".
    """
    from eventworker.deadletters import operations as ops
    from eventworker.deadletters import reader as queue_reader

    with errors():
        settings = load_settings(config, url=url)
        dlqs = dead_letter_queues(settings, [handler] if handler else ())

        async def read(
            connection: Connection, stop: asyncio.Event
        ) -> list[tuple[DeadLetterQueue, list[Letter]]]:
            found = []
            for p in dlqs:
                if handler is None and await queue_reader.count(connection, p.queue) is None:
                    continue  # not declared yet: no dead letters
                found.append(
                    (
                        p,
                        await ops.show(
                            connection, p, limit=limit, preview_chars=preview, stop=stop
                        ),
                    )
                )
            return found

        shown = run(settings, read)
    now = datetime.now(UTC)
    if as_json:
        rows = [{"queue": p.queue, **_row(m, now)} for p, messages in shown for m in messages]
        click.echo(json.dumps(rows, indent=2))
        return
    for p, messages in shown:
        click.echo(f"== {p.label}: {p.queue} ({len(messages)} shown)")
        for m in messages:
            _echo_letter(m, now, with_traceback=with_traceback)


def _echo_letter(m: Letter, now: datetime, *, with_traceback: bool = False) -> None:
    from eventworker.observability.logs import one_line

    attempts = "-" if m.attempts is None else str(m.attempts)
    click.echo(f"{line(m)}  attempts={attempts}  age={age(m.age(now))}  replays={m.replays}")
    if m.exception or m.error:
        kind = f"{m.exception}: " if m.exception else ""
        click.echo(f"    error:    {kind}{one_line(m.error, 300)}")
    if m.header_base64 is not None:
        size = len(base64.b64decode(m.header_base64))
        click.echo(
            f"    header:   {size} bytes as received, undecodable (base64 in --json and in "
            f"`eventworker dlq export`)"
        )
    if m.first_failure or m.last_failure:
        click.echo(f"    failures: first {m.first_failure}, last {m.last_failure}")
    if m.handler or m.host:
        click.echo(f"    handler:  {m.handler} on {m.host or '?'}")
    if m.preview:
        click.echo(f"    body:     ({m.size} bytes) {m.preview}")
    if with_traceback:
        # Line by line, each escaped: the header is text anyone who can publish could forge.
        lines = m.traceback.rstrip("\n").splitlines() or ["(none recorded)"]
        click.echo("    traceback:")
        for text in lines:
            click.echo(f"      {one_line(text, 10_000)}")


@examples(
    "eventworker dlq export send_welcome_mail --out dead.ndjson",
    "eventworker publish --exported --file dead.ndjson",
)
@dlq.command("export")
@click.argument("handler")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="NDJSON file to write (replaced if it exists).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N messages.")
@config_option
@url_option
def export(handler: str, out: str, limit: int | None, config: str | None, url: str | None) -> None:
    """Write HANDLER's dead letters to an NDJSON file, leaving them in place.

    One record per line: routing key, body, properties and headers. `eventworker publish
    --exported --file FILE` publishes them again.
    """
    from eventworker.deadletters import operations as ops

    with errors():
        settings = load_settings(config, url=url)
        [p] = dead_letter_queues(settings, [handler])
        path = Path(out)
        try:
            stream = path.open("wb")
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None

        async def write(connection: Connection, stop: asyncio.Event) -> int:
            return await ops.export(connection, p, stream, limit=limit, stop=stop)

        with stream:
            written = run(settings, write)
    click.echo(f"exported {written} message(s) from {p.queue!r} to {path}")
