"""``eventworker handlers``: every discovered handler and where its messages go."""

from __future__ import annotations

import json
from typing import Any

import click

from eventworker.commands import config_option, errors, examples
from eventworker.settings import load_settings


@examples(
    "eventworker handlers",
    "eventworker handlers --json | jq '.[].queue'",
)
@click.command("handlers")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@config_option
def list_handlers(as_json: bool, config: str | None) -> None:
    """List every discovered handler: plugin, distribution, bindings, queues, retry policy,
    idempotent or not."""
    from eventworker.plugins import discovery
    from eventworker.plugins.resolved import resolve

    with errors():
        settings = load_settings(config)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        rows: list[dict[str, Any]] = []
        for reg, route in zip(registrations, resolve(registrations, settings), strict=True):
            rows.append(
                {
                    "name": reg.handler.name,
                    "plugin": reg.plugin.entry_point,
                    "distribution": f"{reg.plugin.distribution} {reg.plugin.version}",
                    "bindings": list(reg.handler.bindings),
                    "queue": route.queue,
                    "dead_letter_queue": route.dead_letter_queue,
                    "retry": {
                        "max_attempts": route.policy.max_attempts,
                        "delays": list(route.policy.delays),
                    },
                    "idempotent": route.idempotent,
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no handlers installed")
        return
    for row in rows:
        retry = row["retry"]
        click.echo(
            f"{row['name']}  (plugin {row['plugin']}, {row['distribution']})\n"
            f"  bindings:          {', '.join(row['bindings'])}\n"
            f"  queue:             {row['queue']}\n"
            f"  dead-letter queue: {row['dead_letter_queue']}\n"
            f"  retry:             {retry['max_attempts']} attempts, delays "
            f"{', '.join(f'{d:g}s' for d in retry['delays'])}\n"
            f"  idempotent:        {'yes (inbox)' if row['idempotent'] else 'no'}"
        )
