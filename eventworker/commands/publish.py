"""``eventworker publish``: send events by hand, each confirmed by the broker."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from eventworker.commands import config_option, errors, examples, run_async, url_option
from eventworker.commands.progress import progress
from eventworker.errors import ExitCode, InvalidInputError
from eventworker.settings import Settings, load_settings

#: At most this many failed events are listed one per line; the rest are counted.
MAX_LISTED_FAILURES = 20


def _parse_json(raw: bytes, where: str, max_bytes: int) -> bytes:
    if len(raw) > max_bytes:
        raise InvalidInputError(f"{where}: {len(raw)} bytes exceeds max_body_bytes {max_bytes}")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{where}: invalid JSON: {exc}") from None
    return raw


def _bodies(data: str | None, file: str | None, settings: Settings) -> list[bytes]:
    """Every event body, validated before any connection is made."""
    limit = settings.max_body_bytes
    if file is not None:
        if data is not None:
            raise InvalidInputError("give the event as JSON or --file, not both")
        try:
            lines = Path(file).read_bytes().splitlines()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {file}: {exc.strerror}") from None
        bodies = [
            _parse_json(line.strip(), f"{file} line {n}", limit)
            for n, line in enumerate(lines, 1)
            if line.strip()
        ]
        if not bodies:
            raise InvalidInputError(f"{file} holds no events")
        return bodies
    if data is None:
        if sys.stdin.isatty():
            raise InvalidInputError("no event: give JSON as an argument, on stdin, or --file")
        raw = sys.stdin.buffer.read().strip()
    else:
        raw = os.fsencode(data).strip()
    return [_parse_json(raw, "event", limit)]


def _headers(pairs: Sequence[str]) -> dict[str, str]:
    from eventworker.envelope import check_header, check_utf8

    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInputError(f"--header {pair!r}: expected NAME=VALUE")
        try:
            check_utf8(name, "the name")
            check_utf8(value, f"the value of {name!r}")
            check_header(name)
        except ValueError as exc:
            raise InvalidInputError(f"--header: {exc}") from None
        headers[name] = value
    return headers


def _shortstr(value: str | None, what: str) -> None:
    from eventworker.envelope import check_utf8

    if value is None:
        return
    try:
        check_utf8(value, what)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if not 0 < len(value.encode("utf-8", "surrogateescape")) <= 255:
        raise InvalidInputError(f"{what} must be 1 to 255 bytes")


@examples(
    'eventworker publish orders.created \'{"order_id": "o-1"}\'',
    'echo \'{"name": "Ada"}\' | eventworker publish demo.greet --header tenant=acme',
    "eventworker publish orders.created --file backfill.jsonl --failed-out failed.ndjson",
)
@click.command()
@click.argument("routing_key", required=False)
@click.argument("data", metavar="[JSON]", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Publish one event per line of this file (JSON Lines).",
)
@click.option(
    "--exported",
    is_flag=True,
    help="--file holds records written by `eventworker dlq export` (each with its routing "
    "key, id, properties and headers); give no ROUTING_KEY.",
)
@click.option("--id", "event_id", default=None, help="Event id (message_id); default: a UUID.")
@click.option(
    "--header",
    "header_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra AMQP header (repeatable).",
)
@click.option("--correlation-id", default=None, help="Correlation id carried by the event.")
@click.option("--exchange", default=None, help="Exchange (default: the exchange setting).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to wait for each confirm (default: publish_timeout).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1, max=65_535),
    default=None,
    metavar="N",
    help="Confirms in flight at once (default: 1024). The events go out in their order on "
    "one channel, a window's worth per socket write.",
)
@click.option(
    "--failed-out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every event not confirmed to this file, one JSON object per line "
    "(id, status, detail); after an interrupt, those never sent too (status not_sent).",
)
@click.option(
    "--delay",
    "delay_text",
    default=None,
    metavar="DURATION",
    help="Have the broker hold the events this long first: 90s, 15m, 2h, 3d (needs the "
    "delay_levels setting; see docs/time.md).",
)
@click.option(
    "--at",
    "at_text",
    default=None,
    metavar="TIME",
    help="Have the broker hold the events until this ISO 8601 time with a zone, for example "
    "2027-01-01T09:00:00Z (a time past is now).",
)
@config_option
@url_option
def publish(
    routing_key: str | None,
    data: str | None,
    file: str | None,
    exported: bool,
    event_id: str | None,
    header_pairs: Sequence[str],
    correlation_id: str | None,
    exchange: str | None,
    timeout: float | None,
    window: int | None,
    failed_out: str | None,
    delay_text: str | None,
    at_text: str | None,
    config: str | None,
    url: str | None,
) -> None:
    """Publish events to the topic exchange with ROUTING_KEY, each confirmed by the broker.

    The event is JSON from the argument, from stdin, or one per line of --file; with
    --exported, --file holds records of `eventworker dlq export`. Input is checked before
    connecting. Publishing is mandatory: an event no queue is bound for is an error, unless the
    unrouted_queue setting is on: then it goes to that queue, and a warning says how many did.
    Prints how many were confirmed; exits 1 when any was not. With --delay or --at the broker
    holds them first (the confirm says it holds them; whether a queue is bound is known only
    when they come out).

    SIGINT (Ctrl-C) or SIGTERM stops sending, waits up to 5 seconds for the confirms of the
    events already sent (a second signal: no wait), prints how many were confirmed and how many
    not, writes --failed-out, and exits 130.
    """
    from eventworker.observability import logs

    with errors():
        settings = load_settings(config, url=url, exchange=exchange, publish_timeout=timeout)
        logs.configure("WARNING")  # the publisher says when it reconnects and sends again
        _shortstr(event_id, "--id")
        _shortstr(correlation_id, "--correlation-id")
        hold = _hold(delay_text, at_text, settings)
        if exported:
            if event_id or header_pairs or correlation_id:
                raise InvalidInputError(
                    "--exported records carry their own id, headers and correlation id"
                )
            outgoing = _exported(routing_key, data, file, settings)
        else:
            if routing_key is None:
                raise InvalidInputError("no ROUTING_KEY given")
            _check_routing_key(routing_key)
            if event_id is not None and file is not None:
                raise InvalidInputError("--id names one event; a --file gets an id per event")
            bodies = _bodies(data, file, settings)
            headers = _headers(header_pairs)
            outgoing = [
                envelope_outgoing(routing_key, body, event_id, headers, correlation_id)
                for body in bodies
            ]
        if hold:
            outgoing = _held(outgoing, hold, settings)
        from eventworker.commands.sending import send_all

        started = time.perf_counter()
        with progress(len(outgoing), label="publishing") as advance:
            sent = run_async(send_all(settings, outgoing, lambda _: advance(1), window=window))
        elapsed = time.perf_counter() - started
    results = sent.results
    failed = [r for r in results if not r.ok]
    confirmed = len(results) - len(failed)
    as_keys = "their exported routing keys" if exported else repr(routing_key)
    if sent.interrupted:
        never = sum(r.status == "not_sent" for r in failed)
        click.echo(
            f"interrupted after {elapsed:.2f}s: {confirmed} of {len(results)} event(s) confirmed "
            f"on exchange {settings.exchange!r} as {as_keys}, {len(failed)} not confirmed "
            f"({never} never sent)"
        )
    else:
        rate = f" ({confirmed / elapsed:,.0f} events/s)" if elapsed > 0 and len(results) > 1 else ""
        ids = f" (id {results[0].event_id})" if len(results) == 1 and not failed else ""
        click.echo(
            f"published {len(results)} event(s) to exchange {settings.exchange!r} as "
            f"{as_keys}: {confirmed} confirmed in {elapsed:.2f}s{rate}{ids}"
        )
    if sent.unrouted:
        click.echo(
            f"warning: {len(sent.unrouted)} of them matched no binding and went to the unrouted "
            f"queue {settings.unrouted_queue!r} (see `eventworker dlq show "
            f"{settings.unrouted_queue}`)",
            err=True,
        )
    # Events never sent are counted above, not listed: after an early interrupt, that is most.
    listed = [r for r in failed if r.status != "not_sent"]
    for r in listed[:MAX_LISTED_FAILURES]:
        click.echo(f"not published: {r.event_id}: {r.status} {r.detail}".rstrip(), err=True)
    if len(listed) > MAX_LISTED_FAILURES:
        more = f" (all in {failed_out})" if failed_out else " (--failed-out FILE lists all)"
        click.echo(
            f"... and {len(listed) - MAX_LISTED_FAILURES} more not published{more}", err=True
        )
    if failed_out:
        _write_failed(Path(failed_out), failed)
    if sent.interrupted:
        sys.exit(int(ExitCode.INTERRUPTED))
    sys.exit(int(ExitCode.FAILED if failed else ExitCode.OK))


def _check_routing_key(routing_key: str) -> None:
    from eventworker import envelope

    try:
        envelope.check_routing_key(routing_key)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _exported(
    routing_key: str | None, data: str | None, file: str | None, settings: Settings
) -> list[Any]:
    """The events of an export file, each checked like any other before connecting."""
    from eventworker import envelope
    from eventworker.deadletters.letter import read_record
    from eventworker.publishing.channel import Outgoing

    if file is None or routing_key is not None or data is not None:
        raise InvalidInputError("--exported takes --file and no ROUTING_KEY or JSON")
    try:
        lines = Path(file).read_bytes().splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {file}: {exc.strerror}") from None
    outgoing = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file} line {n}"
        record = read_record(line, where)
        try:
            _check_routing_key(record.routing_key)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        _parse_json(record.body, where, settings.max_body_bytes)
        outgoing.append(
            Outgoing(
                record.routing_key,
                record.body,
                record.id or envelope.new_id(),
                record.headers or None,
                record.correlation_id,
                record.causation_id,
                record.timestamp,
            )
        )
    if not outgoing:
        raise InvalidInputError(f"{file} holds no events")
    return outgoing


def _write_failed(path: Path, failed: Sequence[Any]) -> None:
    """Every event not confirmed, one JSON object a line: a long list stays usable."""
    lines = (
        orjson.dumps({"id": r.event_id, "status": r.status, "detail": r.detail}) + b"\n"
        for r in failed
    )
    try:
        path.write_bytes(b"".join(lines))
    except OSError as exc:
        click.echo(f"error: cannot write {path}: {exc.strerror}", err=True)


def _hold(delay_text: str | None, at_text: str | None, settings: Settings) -> int:
    """Whole seconds to hold the events (0: none), checked against ``delay_levels``."""
    from eventworker.topology import delays

    if delay_text is not None and at_text is not None:
        raise InvalidInputError("give --delay or --at, not both")
    option = "--at" if at_text is not None else "--delay"
    try:
        at = delays.parse_time(at_text) if at_text is not None else None
        delay = delays.parse_duration(delay_text) if delay_text is not None else None
    except ValueError as exc:  # names the text given
        raise InvalidInputError(f"{option} {exc}") from None
    try:
        hold = delays.seconds(delay, at)
        delays.check(hold, "x", settings.delay_levels)
    except ValueError as exc:
        raise InvalidInputError(f"{option}: {exc}") from None
    return hold


def _held(outgoing: Sequence[Any], hold: int, settings: Settings) -> list[Any]:
    """``outgoing`` held ``hold`` seconds; a routing key too long to carry the digits is
    refused before connecting."""
    import dataclasses

    from eventworker.topology import delays

    held = []
    for event in outgoing:
        try:
            delays.check(hold, event.routing_key, settings.delay_levels)
        except ValueError as exc:
            raise InvalidInputError(f"event {event.id}: {exc}") from None
        held.append(dataclasses.replace(event, delay=hold))
    return held


def envelope_outgoing(
    routing_key: str,
    body: bytes,
    event_id: str | None,
    headers: dict[str, str],
    correlation_id: str | None,
) -> Any:
    from eventworker import envelope
    from eventworker.publishing.channel import Outgoing

    return Outgoing(
        routing_key, body, event_id or envelope.new_id(), headers or None, correlation_id
    )
