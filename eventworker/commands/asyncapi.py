"""``eventworker asyncapi``: the event catalogue of the installed handlers as an AsyncAPI 3.0
document."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from eventworker.commands import config_option, errors, examples
from eventworker.errors import ExitCode
from eventworker.settings import load_settings


@examples(
    "eventworker asyncapi > asyncapi.json",
    "eventworker asyncapi --format yaml --out docs/asyncapi.yaml",
    "eventworker asyncapi | jq '.operations | keys'",
)
@click.command("asyncapi")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the document to this file instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default=None,
    help="json, or yaml (needs PyYAML). Default: yaml for an --out file ending in .yaml or "
    ".yml, else json.",
)
@config_option
def asyncapi(out: str | None, fmt: str | None, config: str | None) -> None:
    """Write an AsyncAPI 3.0 document of the installed handlers: the exchange, each handler's
    channel and operation, and the events they publish.

    Each handler's work queue and dead-letter queue are channels with AMQP queue bindings, its
    operation receives from the work queue (its binding keys, retry policy and retry queues in
    x-eventworker-* extensions), and each event a handler declares with
    @handler(publishes=...) is a channel on the exchange with a routing-key binding and a send
    operation. Payloads are the JSON Schemas of the handlers' pydantic models. The servers
    are the broker URLs without their credentials. Nothing connects to the broker.
    """
    from eventworker.plugins import catalogue, discovery
    from eventworker.plugins.resolved import resolve

    if fmt is None:
        fmt = (
            "yaml" if out is not None and Path(out).suffix.lower() in (".yaml", ".yml") else "json"
        )
    dump = _yaml_dump() if fmt == "yaml" else None
    with errors():
        settings = load_settings(config)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        doc = catalogue.document(registrations, resolve(registrations, settings), settings)
    text = dump(doc) if dump is not None else json.dumps(doc, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        click.echo(f"error: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(int(ExitCode.FAILED))


def _yaml_dump() -> Any:
    """PyYAML's ``safe_dump`` in the document's own key order, or exit with an error line."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        click.echo(
            "error: --format yaml needs PyYAML, which is not installed (pip install pyyaml); "
            "--format json needs nothing",
            err=True,
        )
        sys.exit(int(ExitCode.USAGE))

    def dump(doc: dict[str, Any]) -> str:
        text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
        return text

    return dump
