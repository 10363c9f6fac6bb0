"""What the ``eventworker dlq`` commands share: HANDLER names -> queues, one connection per
command with clean interruption, and how a dead letter is shown on one line."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

from eventworker.errors import ExitCode
from eventworker.settings import Settings

if TYPE_CHECKING:
    from eventworker.deadletters.letter import Letter
    from eventworker.deadletters.operations import Connection, DeadLetterQueue, Selection

T = TypeVar("T")
_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*$")


def parse_rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    match = _RATE.match(value)
    if match is None or float(match["n"]) <= 0:
        raise click.BadParameter(f"{value!r}: expected messages per second, like 50/s or 2.5")
    return float(match["n"])


def dead_letter_queues(settings: Settings, names: Sequence[str]) -> list[DeadLetterQueue]:
    """The queues ``names`` stand for (every handler's and the unrouted queue when empty).

    A name that is no installed handler is taken as a handler installed elsewhere with the
    default queue name, so an operator's machine needs no plugins.
    """
    from eventworker.deadletters.operations import DeadLetterQueue
    from eventworker.plugins import discovery
    from eventworker.plugins.resolved import resolve
    from eventworker.topology import layout

    back = layout.return_exchange(settings.exchange)
    registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
    kind = settings.queue_type
    known = {
        r.handler.name: DeadLetterQueue(
            r.handler.name, r.dead_letter_queue, back, r.queue, queue_type=kind
        )
        for r in resolve(registrations, settings)
    }
    if settings.unrouted_queue:
        known[settings.unrouted_queue] = DeadLetterQueue(
            "(unrouted)", settings.unrouted_queue, settings.exchange, None, "unrouted", kind
        )
    if not names:
        return list(known.values())
    found = []
    for name in names:
        if name not in known:
            queues = layout.handler_queues(name, (), prefix=settings.queue_prefix)
            click.echo(
                f"note: no handler {name!r} is installed here; using its default queues "
                f"{queues.dead_letter_queue!r} and {queues.queue!r}",
                err=True,
            )
            known[name] = DeadLetterQueue(
                name, queues.dead_letter_queue, back, queues.queue, queue_type=kind
            )
        found.append(known[name])
    return found


def run(settings: Settings, operation: Callable[[Connection, asyncio.Event], Awaitable[T]]) -> T:
    """Run ``operation`` on a fresh connection with a ``stop`` event.

    The first SIGINT/SIGTERM sets ``stop``: the operation ends between two messages, hands back
    what it held, in order, and raises Interrupted (exit 130). A second one cancels at once
    (nothing is lost, but a quorum queue may then get its held messages back out of order).
    """
    from eventworker.amqp.connection import connect

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                task.cancel()
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        connection = await connect(
            settings.url,
            role="dlq",
            timeout=settings.connect_timeout,
            heartbeat=settings.heartbeat,
        )
        _warn_about_read_counts(settings, connection)
        try:
            return await operation(connection, stop)
        finally:
            await connection.close()

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo(
            "interrupted: every message not reported as moved is still dead-lettered", err=True
        )
        sys.exit(int(ExitCode.INTERRUPTED))


def _warn_about_read_counts(settings: Settings, connection: Connection) -> None:
    from eventworker.deadletters.reader import broker_version, counts_reads

    version = broker_version(connection)
    if settings.queue_type == "quorum" and counts_reads(version):
        click.echo(
            f"warning: RabbitMQ {version} counts every message a read hands back towards a "
            f"quorum queue's delivery limit (20 by default), and a dead-letter queue drops a "
            f"message past it: give the dead-letter queues a policy with delivery-limit -1 "
            f"(see docs/operating-dead-letters.md)",
            err=True,
        )


def age(seconds: float | None) -> str:
    from eventworker.deadletters.letter import age_label

    return age_label(seconds)


def line(p: Letter) -> str:
    from eventworker.observability.logs import one_line

    return f"{p.id or '(no id)'}  {one_line(p.routing_key, 100)}  {p.reason}"


def selection(ids: Sequence[str], reason: str | None) -> Selection:
    from eventworker.deadletters.operations import Selection

    return Selection(frozenset(ids), reason)
