"""``eventworker status``: backlog and failures per handler, as the broker reports them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from eventworker.commands import config_option, errors, examples, url_option
from eventworker.settings import Settings, load_settings

#: Shown for a queue the broker does not have (no worker declared it yet).
MISSING = "-"


@examples(
    "eventworker status",
    "eventworker status --json | jq '.handlers'",
)
@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON object, for scripts.")
@config_option
@url_option
def status(as_json: bool, config: str | None, url: str | None) -> None:
    """Show each handler's queue depth, consumers, retry-tier depths and dead letters.

    Counts come from the broker (passive queue declares: ready messages, not the ones a
    consumer holds unacked); no message is read or moved. Retry tiers are shared by all
    handlers: a tier's depth counts every handler's retries waiting in it. With delay_levels,
    also the delayed events (and exact-delay retries) waiting in each level.
    """
    from eventworker.plugins import discovery

    with errors():
        settings = load_settings(config, url=url)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        report = asyncio.run(_report(settings, registrations))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not report["handlers"]:
        click.echo("no handlers installed")
    else:
        click.echo(_table(report))


async def _report(settings: Settings, registrations: list[Any]) -> dict[str, Any]:
    from eventworker.observability import stats
    from eventworker.plugins.resolved import resolve
    from eventworker.topology import delays

    route_list = resolve(registrations, settings)
    tiers = route_list[0].retry_queues if route_list else {}
    levels = [delays.level_name(settings.exchange, k) for k in range(settings.delay_levels)]
    names = [q for r in route_list for q in (r.queue, r.dead_letter_queue)] + list(tiers.values())
    async with stats.connected(settings) as reader:
        found = await reader.read(names + levels)
    retry_queues = [
        {"delay": delay, "queue": queue, "messages": found[queue].messages}
        for delay, queue in sorted(tiers.items())
    ]
    by_delay = {q["delay"]: q for q in retry_queues}
    handlers = [
        {
            "name": r.handler.name,
            "queue": r.queue,
            "messages": found[r.queue].messages,
            "consumers": found[r.queue].consumers,
            "dead_letter_queue": r.dead_letter_queue,
            "dead_letters": found[r.dead_letter_queue].messages,
            "retry": [by_delay[d] for d in sorted(set(r.policy.delays))],
        }
        for r in route_list
    ]
    delay_levels = [
        {"level": k, "seconds": 2**k, "queue": queue, "messages": found[queue].messages}
        for k, queue in enumerate(levels)
    ]
    return {
        "exchange": settings.exchange,
        "handlers": handlers,
        "retry_queues": retry_queues,
        "delay_levels": delay_levels,
    }


def _shown(value: int | None) -> str:
    return MISSING if value is None else str(value)


def _table(report: dict[str, Any]) -> str:
    from eventworker.topology.layout import delay_label

    header = ("HANDLER", "QUEUE", "READY", "CONSUMERS", "DEAD", "RETRY TIERS (shared)")
    rows = [
        (
            h["name"],
            h["queue"],
            _shown(h["messages"]),
            _shown(h["consumers"]),
            _shown(h["dead_letters"]),
            " ".join(f"{delay_label(t['delay'])}:{_shown(t['messages'])}" for t in h["retry"]),
        )
        for h in report["handlers"]
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if 2 <= i <= 4 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in (header, *rows)
    ]
    if report["delay_levels"]:
        lines.append(_levels(report["delay_levels"]))
    if any(h["messages"] is None for h in report["handlers"]):
        lines.append(f"{MISSING}: the queue does not exist (no worker has declared it yet)")
    return "\n".join(lines)


def _levels(levels: list[dict[str, Any]]) -> str:
    """``DELAYED 3 waiting: level 2 (4s):1 level 10 (1024s):2``, the empty levels left out."""
    if any(level["messages"] is None for level in levels):
        return f"DELAYED {MISSING}: the delay levels are not declared (eventworker topology apply)"
    waiting = [level for level in levels if level["messages"]]
    shown = " ".join(f"level {w['level']} ({w['seconds']}s):{w['messages']}" for w in waiting)
    total = sum(level["messages"] for level in levels)
    return f"DELAYED {total} waiting{': ' + shown if shown else ''}"
