"""``eventworker dlq replay`` and ``purge``: the commands that take dead letters out."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from eventworker.commands import config_option, errors, url_option
from eventworker.commands._deadletters import dead_letter_queues, line, parse_rate, run, selection
from eventworker.errors import ExitCode, InvalidInputError
from eventworker.settings import load_settings

if TYPE_CHECKING:
    from eventworker.deadletters.letter import Letter
    from eventworker.deadletters.operations import Connection, DeadLetterQueue, ReplayOutcome


@click.command("replay")
@click.argument("handler", required=False)
@click.option("--all", "every", is_flag=True, help="Replay every dead-letter queue.")
@click.option("--id", "ids", multiple=True, metavar="ID", help="Only this event id (repeatable).")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Move at most N messages.")
@click.option(
    "--rate", callback=parse_rate, default=None, metavar="N/s", help="At most N per second."
)
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@config_option
@url_option
def replay(
    handler: str | None,
    every: bool,
    ids: Sequence[str],
    reason: str | None,
    limit: int | None,
    rate: float | None,
    dry_run: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Send dead letters back to HANDLER's work queue, attempt count reset.

    Each copy is confirmed by the broker before its original leaves the dead-letter queue (a
    crash in between leaves a duplicate, never a loss). Copies reach that handler only, with
    x-eventworker-replays raised by one. Unrouted events go back to the exchange with their
    routing key. Prints each message it moved. A message whose AMQP header cannot be decoded
    is never replayed: it stays dead-lettered, in its place, named with the reason (exit 1).
    """
    from eventworker.deadletters import operations as ops
    from eventworker.deadletters import reader as queue_reader

    with errors():
        if (handler is None) == (not every):
            raise InvalidInputError("name one HANDLER, or give --all")
        settings = load_settings(config, url=url)
        dlqs = dead_letter_queues(settings, [handler] if handler else ())
        select = selection(ids, reason)
        verb = "would move" if dry_run else "moved"

        def echo(m: Letter) -> None:
            click.echo(f"{verb} {line(m)}")

        async def move(
            connection: Connection, stop: asyncio.Event
        ) -> list[tuple[DeadLetterQueue, ReplayOutcome]]:
            outcomes = []
            for p in dlqs:
                if every and await queue_reader.count(connection, p.queue) is None:
                    continue
                outcome = await ops.replay(
                    connection,
                    p,
                    select=select,
                    limit=limit,
                    rate=rate,
                    dry_run=dry_run,
                    publish_timeout=settings.publish_timeout,
                    on_move=echo,
                    stop=stop,
                )
                outcomes.append((p, outcome))
                if outcome.error:
                    break
            return outcomes

        outcomes = run(settings, move)
    failed = False
    for p, outcome in outcomes:
        target = f"queue {p.return_to!r}" if p.return_to else f"exchange {p.exchange!r}"
        click.echo(
            f"{p.label}: {len(outcome.moved)} of {outcome.scanned} message(s) read from "
            f"{p.queue!r} {'would be ' if dry_run else ''}replayed to {target}"
        )
        for m in outcome.refused:
            failed = True
            click.echo(
                f"kept {line(m)}: its AMQP header cannot be decoded ({m.error}); a copy could "
                f"not be what was sent (`eventworker dlq export` keeps its bytes, `eventworker "
                f"dlq purge --id` removes it)",
                err=True,
            )
        if outcome.error:
            failed = True
            click.echo(
                f"error: {outcome.error}; it and the rest stay in the dead-letter queue", err=True
            )
    sys.exit(int(ExitCode.FAILED if failed else ExitCode.OK))


@click.command("purge")
@click.argument("handler")
@click.option("--id", "ids", multiple=True, metavar="ID", help="Only this event id (repeatable).")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--yes", is_flag=True, help="Really delete them: there is no undo.")
@config_option
@url_option
def purge(
    handler: str,
    ids: Sequence[str],
    reason: str | None,
    yes: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Delete dead letters of HANDLER for good (all, or those selected); needs --yes."""
    from eventworker.deadletters import operations as ops

    with errors():
        if not yes:
            raise InvalidInputError(
                "purge deletes messages for good: add --yes (and consider `eventworker dlq "
                "export` first)"
            )
        settings = load_settings(config, url=url)
        [p] = dead_letter_queues(settings, [handler])
        select = selection(ids, reason) if ids or reason else None

        async def delete(connection: Connection, stop: asyncio.Event) -> int:
            return await ops.purge(connection, p, select=select, stop=stop)

        deleted = run(settings, delete)
    click.echo(f"purged {deleted} message(s) from {p.queue!r}")
