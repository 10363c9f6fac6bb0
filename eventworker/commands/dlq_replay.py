"""``eventworker dlq replay`` and ``purge``: the commands that take dead letters out."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from eventworker.commands import config_option, errors, examples, url_option
from eventworker.commands._deadletters import dead_letter_queues, line, parse_rate, run, selection
from eventworker.commands.progress import progress
from eventworker.deadletters.window import DEFAULT_WINDOW, MAX_WINDOW
from eventworker.errors import ExitCode
from eventworker.settings import load_settings

if TYPE_CHECKING:
    from eventworker.deadletters.letter import Letter
    from eventworker.deadletters.operations import Connection, DeadLetterQueue, ReplayOutcome


@examples(
    "eventworker dlq replay send_welcome_mail --dry-run",
    "eventworker dlq replay send_welcome_mail --reason timeout --rate 50/s",
    "eventworker dlq replay --all --limit 100",
)
@click.command("replay")
@click.argument("handler", required=False)
@click.option("--all", "every", is_flag=True, help="Replay every dead-letter queue.")
@click.option("--id", "ids", multiple=True, metavar="ID", help="Only this event id (repeatable).")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Move at most N messages.")
@click.option(
    "--rate", callback=parse_rate, default=None, metavar="N/s", help="At most N per second."
)
@click.option(
    "--window",
    type=click.IntRange(1, MAX_WINDOW),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Copies whose confirms may be in flight at once.",
)
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@click.option("--verbose", "-v", is_flag=True, help="Print a line per message moved.")
@click.option("--quiet", "-q", is_flag=True, help="Print the summary only: no progress bar.")
@config_option
@url_option
def replay(
    handler: str | None,
    every: bool,
    ids: Sequence[str],
    reason: str | None,
    limit: int | None,
    rate: float | None,
    window: int,
    dry_run: bool,
    verbose: bool,
    quiet: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Send dead letters back to HANDLER's work queue, attempt count reset.

    Copies go out with up to --window confirms in flight, in the dead-letter queue's order, and
    each original leaves the dead-letter queue only once the broker confirmed its copy (a crash
    in between leaves a duplicate, never a loss). Copies reach that handler only, with
    x-eventworker-replays raised by one. Unrouted events go back to the exchange with their
    routing key. Prints a summary per queue; at a terminal a progress bar shows how far it has
    come (not with --quiet); --verbose prints a line per message moved instead. The first
    Ctrl-C stops reading (what the broker already gave it, at most twice --window, moves too),
    waits for the confirms in flight and leaves the rest dead-lettered, in order (exit 130). A
    message whose AMQP header cannot be decoded is never replayed: it stays dead-lettered, in
    its place, named with the reason (exit 1).
    """
    from eventworker.deadletters import operations as ops
    from eventworker.deadletters import reader as queue_reader

    with errors():
        if (handler is None) == (not every):
            raise click.UsageError("name one HANDLER, or give --all")
        settings = load_settings(config, url=url)
        dlqs = dead_letter_queues(settings, [handler] if handler else ())
        select = selection(ids, reason)
        verb = "would move" if dry_run else "moved"

        async def move(
            connection: Connection, stop: asyncio.Event
        ) -> list[tuple[DeadLetterQueue, ReplayOutcome, float]]:
            counts = {p.queue: await queue_reader.count(connection, p.queue) for p in dlqs}
            total = sum(n or 0 for n in counts.values())
            outcomes = []

            def echo(m: Letter) -> None:
                click.echo(f"{verb} {line(m)}")

            with progress(0 if quiet or verbose else total, label="reading") as advance:
                for p in dlqs:
                    if every and counts[p.queue] is None:
                        continue
                    started = time.monotonic()
                    try:
                        outcome = await ops.replay(
                            connection,
                            p,
                            select=select,
                            limit=limit,
                            rate=rate,
                            dry_run=dry_run,
                            publish_timeout=settings.publish_timeout,
                            on_move=echo if verbose else _ignore,
                            stop=stop,
                            on_read=lambda: advance(1),
                            window=window,
                        )
                    except ops.ReplayInterrupted as exc:
                        outcomes.append((p, exc.outcome, time.monotonic() - started))
                        interrupted.append(str(exc))
                        break
                    outcomes.append((p, outcome, time.monotonic() - started))
                    if outcome.error:
                        break
            return outcomes

        interrupted: list[str] = []
        outcomes = run(settings, move)
    failed = False
    for p, outcome, seconds in outcomes:
        target = f"queue {p.return_to!r}" if p.return_to else f"exchange {p.exchange!r}"
        moved = len(outcome.moved)
        pace = f" in {seconds:.2f}s ({moved / seconds:,.0f} messages/s)" if moved > 1 else ""
        click.echo(
            f"{p.label}: {moved} of {outcome.scanned} message(s) read from {p.queue!r} "
            f"{'would be ' if dry_run else ''}replayed to {target}{'' if dry_run else pace}"
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
    if interrupted:
        click.echo(interrupted[0], err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    sys.exit(int(ExitCode.FAILED if failed else ExitCode.OK))


def _ignore(_: Letter) -> None:
    pass


@examples(
    "eventworker dlq purge send_welcome_mail --id o-17 --yes",
    "eventworker dlq purge send_welcome_mail --reason schema_error --yes",
)
@click.command("purge")
@click.argument("handler")
@click.option("--id", "ids", multiple=True, metavar="ID", help="Only this event id (repeatable).")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--yes", is_flag=True, help="Really delete them: there is no undo.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, even at a terminal.")
@config_option
@url_option
def purge(
    handler: str,
    ids: Sequence[str],
    reason: str | None,
    yes: bool,
    quiet: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Delete dead letters of HANDLER for good (all, or those selected); needs --yes.

    Selected by --id or --reason, each message is read and checked; at a terminal a progress
    bar shows how far it has come (not with --quiet). Without a selection the queue is purged
    at once.
    """
    from eventworker.deadletters import operations as ops
    from eventworker.deadletters import reader as queue_reader

    with errors():
        if not yes:
            raise click.UsageError(
                "purge deletes messages for good: add --yes (and consider `eventworker dlq "
                "export` first)"
            )
        settings = load_settings(config, url=url)
        [p] = dead_letter_queues(settings, [handler])
        select = selection(ids, reason) if ids or reason else None

        async def delete(connection: Connection, stop: asyncio.Event) -> int:
            total = 0 if quiet or select is None else await queue_reader.count(connection, p.queue)
            with progress(total or 0, label="reading") as advance:
                return await ops.purge(
                    connection, p, select=select, stop=stop, on_read=lambda: advance(1)
                )

        deleted = run(settings, delete)
    click.echo(f"purged {deleted} message(s) from {p.queue!r}")
