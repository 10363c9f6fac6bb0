"""``eventworker plugins``: every installed handler plugin and whether it is enabled."""

from __future__ import annotations

import json

import click

from eventworker.commands import config_option, errors, examples
from eventworker.settings import load_settings


@examples(
    "eventworker plugins",
    "eventworker plugins --json",
)
@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@config_option
def list_plugins(as_json: bool, config: str | None) -> None:
    """List the entry points of the eventworker.handlers group without importing them.

    A plugin is enabled when the `plugins` setting is empty or names it; metadata found in the
    working directory (a stray *.dist-info) is ignored, never imported.
    """
    from eventworker.plugins.discovery import survey

    with errors():
        settings = load_settings(config)
        rows = [
            {
                "plugin": row.plugin.entry_point,
                "value": row.plugin.value,
                "distribution": row.plugin.distribution,
                "version": row.plugin.version,
                "status": row.status,
            }
            for row in survey(plugins=settings.plugins)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no plugins installed")
    for row in rows:
        click.echo(
            f"{row['plugin']}  {row['value']}  ({row['distribution']} {row['version']}): "
            f"{row['status']}"
        )
