"""``eventworker topology plan|apply``: the exchanges, queues, arguments and bindings the
installed handlers need, compared with the broker; apply creates what is missing and removes
stale bindings of the handlers' own queues."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from eventworker.commands import config_option, errors, examples, url_option
from eventworker.errors import ExitCode, InvalidInputError
from eventworker.settings import Settings, load_settings

if TYPE_CHECKING:
    from eventworker.topology.bindings import Reading
    from eventworker.topology.drift import Finding
    from eventworker.topology.layout import Plan

_DRIFT = ("missing", "conflict", "extra")


def _handler_option(func: Any) -> Any:
    return click.option(
        "--handler",
        "handler_names",
        multiple=True,
        metavar="NAME",
        help="Only this handler's topology (repeatable). Default: as `run` would.",
    )(func)


def _plan(settings: Settings) -> Plan:
    from eventworker.plugins import discovery
    from eventworker.plugins.resolved import resolve, topology_plan
    from eventworker.plugins.schedules import gather

    registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
    if not registrations:
        raise InvalidInputError("no handlers installed: there is no topology to compare")
    scheduled = bool(gather(registrations, settings))
    return topology_plan(resolve(registrations, settings), settings, schedules=scheduled)


def _inspect(settings: Settings, *, apply: bool) -> tuple[Reading, list[Finding], list[str]]:
    """Compare the plan with the broker (and with ``apply``, reconcile, then compare again)."""
    from eventworker.amqp.connection import connect
    from eventworker.topology import bindings, drift

    plan = _plan(settings)

    async def run() -> tuple[Reading, list[Finding], list[str]]:
        connection = await connect(
            settings.url,
            role="topology",
            timeout=settings.connect_timeout,
            heartbeat=settings.heartbeat,
        )
        try:
            reading = await bindings.read(settings)
            findings = await drift.compare(connection, plan, reading, prefix=settings.queue_prefix)
            done: list[str] = []
            if apply:
                done = await drift.reconcile(connection, plan, findings)
                reading = await bindings.read(settings)
                findings = await drift.compare(
                    connection, plan, reading, prefix=settings.queue_prefix
                )
            return reading, findings, done
        finally:
            await connection.close()

    return asyncio.run(run())


def _echo(settings: Settings, reading: Reading, findings: list[Finding]) -> None:
    click.echo(f"exchange {settings.exchange!r}, bindings read from: {reading.source}")
    for f in findings:
        if f.status == "unchecked":
            continue
        click.echo(f"  {f.status:<9} {f.kind:<9} {f.name}")
        if f.status != "ok" and f.detail:
            click.echo(f"            {f.detail}")
        if f.advice:
            click.echo(f"            how: {f.advice}")
    counts: Counter[str] = Counter(f.status for f in findings)
    summary = ", ".join(f"{counts[s]} {s}" for s in ("ok", *_DRIFT, "unchecked") if counts[s])
    click.echo(summary)


def _row(f: Finding) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "name": f.name,
        "status": f.status,
        "detail": f.detail,
        "advice": f.advice,
    }


@examples(
    "eventworker topology plan",
    "eventworker topology apply",
)
@click.group("topology")
def topology() -> None:
    """Compare the topology the installed handlers need with the broker, and fix what can be."""


@examples(
    "eventworker topology plan",
    "eventworker topology plan --handler send_welcome_mail --json",
)
@topology.command("plan")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@_handler_option
@config_option
@url_option
def plan(as_json: bool, handler_names: Sequence[str], config: str | None, url: str | None) -> None:
    """Show what is missing, extra or in conflict on the broker; change nothing.

    Exchanges and queues are checked over AMQP (a conflicting argument is what `run` would
    stop on); bindings with the management API (management_url) or, with a local broker,
    rabbitmqctl. Exits 0 when the broker matches, 9 when it does not.
    """
    with errors():
        settings = load_settings(config, url=url, handlers=tuple(handler_names) or None)
        reading, findings, _ = _inspect(settings, apply=False)
    if as_json:
        click.echo(json.dumps([_row(f) for f in findings], indent=2))
    else:
        _echo(settings, reading, findings)
    drifted = any(f.status in _DRIFT for f in findings)
    sys.exit(int(ExitCode.DRIFT if drifted else ExitCode.OK))


@examples(
    "eventworker topology apply",
    "eventworker topology apply --handler send_welcome_mail",
)
@topology.command("apply")
@_handler_option
@config_option
@url_option
def apply(handler_names: Sequence[str], config: str | None, url: str | None) -> None:
    """Create what is missing and remove stale bindings of the handlers' own queues.

    Conflicting arguments are left alone, with how to migrate (RabbitMQ never changes an
    existing queue's arguments); so are bindings to queues of handlers not installed here.
    Exits 0 when the broker then matches, 9 when a conflict or foreign binding remains.
    """
    with errors():
        settings = load_settings(config, url=url, handlers=tuple(handler_names) or None)
        reading, findings, done = _inspect(settings, apply=True)
    for line in done:
        click.echo(line)
    if not done:
        click.echo("nothing to change")
    left = [f for f in findings if f.status in _DRIFT]
    if left:
        click.echo("left as it is:")
        _echo(settings, reading, left)
    sys.exit(int(ExitCode.DRIFT if left else ExitCode.OK))
