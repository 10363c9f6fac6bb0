"""``eventworker schedules``: every periodic event, its next ticks and the current emitter."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from eventworker.commands import config_option, errors, examples, run_async, url_option
from eventworker.settings import load_settings


@examples(
    "eventworker schedules",
    "eventworker schedules --next 5 --json | jq '.schedules[].next'",
)
@click.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="A JSON document, for scripts.")
@click.option(
    "--next",
    "count",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="How many upcoming ticks to show per schedule.",
)
@config_option
@url_option
def schedules(as_json: bool, count: int, config: str | None, url: str | None) -> None:
    """List every periodic event (the installed plugins' and [[schedules]]): cron, timezone,
    routing key, where it is declared, its next ticks, and the worker that emits them now.

    The emitter is read from the broker: whether <queue_prefix>schedules.leader has an active
    consumer and, with management_url set, which one it is (its connection name: role, host and
    pid) and how many workers stand for election. Otherwise it is shown as unknown, with the
    reason.
    """
    from eventworker.plugins import discovery
    from eventworker.plugins.schedules import gather
    from eventworker.worker.emitter import elected

    with errors():
        settings = load_settings(config, url=url)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        found = gather(registrations, settings)
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = [
            {
                "name": s.name,
                "cron": s.cron,
                "timezone": s.timezone,
                "routing_key": s.routing_key,
                "catch_up": s.catch_up,
                "source": s.source,
                "next": [t.astimezone(s.zone).isoformat() for t in s.next_times(count, after=now)],
            }
            for s in found
        ]
        emitter = run_async(elected(settings)) if found else None
    if as_json:
        document = {
            "schedules": rows,
            "emitter": None
            if emitter is None
            else {
                "connection": emitter.connection,
                "candidates": emitter.candidates,
                "detail": emitter.detail,
            },
        }
        click.echo(json.dumps(document, indent=2))
        return
    if not rows:
        click.echo("no schedules declared (plugins' schedule() or [[schedules]] in the settings)")
        return
    for row in rows:
        click.echo(
            f"{row['name']}  ({row['source']})\n"
            f"  cron:        {row['cron']}  ({row['timezone']})\n"
            f"  routing key: {row['routing_key']}\n"
            f"  catch up:    {row['catch_up']}\n"
            f"  next:        {', '.join(row['next'])}"
        )
    assert emitter is not None
    click.echo(f"emitter: {emitter.detail}")
