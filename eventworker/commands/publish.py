"""``eventworker publish``: send events by hand, each confirmed by the broker."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from eventworker.commands import config_option, errors, run_async, url_option
from eventworker.commands.progress import progress
from eventworker.errors import ExitCode, InvalidInputError
from eventworker.settings import Settings, load_settings

#: At most this many failed events are listed one per line; the rest are counted.
MAX_LISTED_FAILURES = 20
#: How often events whose connection was lost are sent again on a new connection.
RECONNECTS = 3


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
    from eventworker.envelope import check_header

    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInputError(f"--header {pair!r}: expected NAME=VALUE")
        try:
            check_header(name)
        except ValueError as exc:
            raise InvalidInputError(f"--header: {exc}") from None
        headers[name] = value
    return headers


def _shortstr(value: str | None, what: str) -> None:
    if value is not None and not 0 < len(value.encode("utf-8", "surrogateescape")) <= 255:
        raise InvalidInputError(f"{what} must be 1 to 255 bytes")


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
    "--failed-out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every event not confirmed to this file, one JSON object per line "
    "(id, status, detail).",
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
    failed_out: str | None,
    config: str | None,
    url: str | None,
) -> None:
    """Publish events to the topic exchange with ROUTING_KEY, each confirmed by the broker.

    The event is JSON from the argument, from stdin, or one per line of --file; with
    --exported, --file holds records of `eventworker dlq export`. Input is checked before
    connecting. Publishing is mandatory: an event no queue is bound for is an error, unless the
    unrouted_queue setting is on: then it goes to that queue, and a warning says how many did.
    Prints how many were confirmed; exits 1 when any was not.
    """
    from eventworker.observability import logs

    with errors():
        settings = load_settings(config, url=url, exchange=exchange, publish_timeout=timeout)
        logs.configure("ERROR")
        _shortstr(event_id, "--id")
        _shortstr(correlation_id, "--correlation-id")
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
        started = time.perf_counter()
        with progress(len(outgoing), label="publishing") as advance:
            results, unrouted = run_async(_publish_all(settings, outgoing, lambda _: advance(1)))
        elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    confirmed = len(results) - len(failed)
    rate = f" ({confirmed / elapsed:,.0f} events/s)" if elapsed > 0 and len(results) > 1 else ""
    ids = f" (id {results[0].event_id})" if len(results) == 1 and not failed else ""
    click.echo(
        f"published {len(results)} event(s) to exchange {settings.exchange!r} as "
        f"{'their exported routing keys' if exported else repr(routing_key)}: {confirmed} "
        f"confirmed in {elapsed:.2f}s{rate}{ids}"
    )
    if unrouted:
        click.echo(
            f"warning: {len(unrouted)} of them matched no binding and went to the unrouted "
            f"queue {settings.unrouted_queue!r} (see `eventworker dlq show "
            f"{settings.unrouted_queue}`)",
            err=True,
        )
    for r in failed[:MAX_LISTED_FAILURES]:
        click.echo(f"not published: {r.event_id}: {r.status} {r.detail}".rstrip(), err=True)
    if len(failed) > MAX_LISTED_FAILURES:
        more = f" (all in {failed_out})" if failed_out else " (--failed-out FILE lists all)"
        click.echo(
            f"... and {len(failed) - MAX_LISTED_FAILURES} more not published{more}", err=True
        )
    if failed_out:
        _write_failed(Path(failed_out), failed)
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


async def _publish_all(
    settings: Settings, outgoing: list[Any], on_result: Callable[[Any], None]
) -> tuple[list[Any], set[str]]:
    """The result of each publish, and the ids of those that went to the unrouted queue.

    Events whose connection was lost before their confirm are sent again (same id) on a new
    connection — the next node of a cluster — up to RECONNECTS times. A lost confirm may mean
    the broker has it: a duplicate, never a loss. ``on_result`` hears each final result once.
    """
    from contextlib import AsyncExitStack

    from eventworker.errors import BrokerUnreachableError
    from eventworker.publishing import unrouted
    from eventworker.publishing.channel import ConfirmChannel

    async with AsyncExitStack() as stack:
        watch = None
        if settings.unrouted_queue:
            watch = await stack.enter_async_context(
                unrouted.watch(
                    settings.url,
                    settings.exchange,
                    connect_timeout=settings.connect_timeout,
                    heartbeat=settings.heartbeat,
                )
            )
            if watch.problem:
                click.echo(f"note: {watch.problem}", err=True)
        results: list[Any] = [None] * len(outgoing)
        pending = list(range(len(outgoing)))
        for round_ in range(RECONNECTS + 1):
            last = round_ == RECONNECTS

            def settled(result: Any, last: bool = last) -> None:
                if last or result.status != "connection_lost":
                    on_result(result)

            try:
                async with ConfirmChannel.connect(
                    settings.urls(),
                    exchange=settings.exchange,
                    source="eventworker",
                    timeout=settings.publish_timeout,
                    connect_timeout=settings.connect_timeout,
                    heartbeat=settings.heartbeat,
                    tls=settings.tls,
                ) as publisher:
                    sent = await publisher.send_many(
                        [outgoing[i] for i in pending], on_result=settled
                    )
            except BrokerUnreachableError:
                if round_ == 0:
                    raise
                break  # the lost ones stay reported as connection_lost
            for i, result in zip(pending, sent, strict=True):
                results[i] = result
            pending = [i for i in pending if results[i].status == "connection_lost"]
            if not pending or last:
                break
            click.echo(
                f"connection lost: publishing {len(pending)} unconfirmed event(s) again", err=True
            )
        confirmed = [r.event_id for r in results if r is not None and r.ok]
        return results, await watch.unrouted(confirmed) if watch else set()
