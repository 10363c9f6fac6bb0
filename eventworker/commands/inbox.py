"""``eventworker inbox stats|purge``: look into and clean the inbox of idempotent handlers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import click

from eventworker.commands import F, config_option, errors, examples
from eventworker.settings import InboxSettings, load_settings

T = TypeVar("T")


def store_option(func: F) -> F:
    return click.option(
        "--store",
        "store_url",
        default=None,
        metavar="URL",
        help="Inbox store URL (default: the inbox.url setting). Prefer "
        "$EVENTWORKER_INBOX__URL: other users can read the command line.",
    )(func)


def _settings(config: str | None, store_url: str | None) -> InboxSettings:
    overrides = {"inbox": {"url": store_url}} if store_url is not None else {}
    return load_settings(config, **overrides).inbox


def _with_store(settings: InboxSettings, use: Callable[[Any], Awaitable[T]]) -> T:
    """Open the store the settings name (never creating it), run ``use`` on it, close it."""
    from eventworker.inbox.stores import open_store

    store = open_store(settings, connections=1)

    async def main() -> T:
        try:
            await store.open(create=False)
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(main())


@examples(
    "eventworker inbox stats",
    "eventworker inbox purge --older-than 86400",
)
@click.group("inbox")
def inbox() -> None:
    """Look into and clean the inbox of idempotent handlers (the inbox.url setting)."""


@examples(
    "eventworker inbox stats",
    "eventworker inbox stats --store sqlite:///var/lib/eventworker/inbox.db --json",
)
@inbox.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON object, for scripts.")
@config_option
@store_option
def stats(as_json: bool, config: str | None, store_url: str | None) -> None:
    """Entries per handler: completed, in progress, expired claims, duplicates skipped.

    An expired claim is one whose worker died before finishing (the next copy of the event
    takes it over); duplicates count the copies acked without running the handler.
    """
    with errors():
        settings = _settings(config, store_url)
        rows = _with_store(settings, lambda store: store.stats())
    if as_json:
        report = {
            "store": settings.redacted_url(),
            "name": settings.name,
            "handlers": [asdict(r) for r in rows],
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"inbox {settings.redacted_url()} ({settings.name})")
    if not rows:
        click.echo("no entries")
        return
    width = max(len("handler"), *(len(r.handler) for r in rows))
    click.echo(
        f"{'handler':<{width}}  {'completed':>10}  {'in progress':>11}  {'expired':>8}  "
        f"{'duplicates':>10}"
    )
    for r in rows:
        click.echo(
            f"{r.handler:<{width}}  {r.completed:>10}  {r.in_progress:>11}  {r.expired:>8}  "
            f"{r.duplicates:>10}"
        )


@examples(
    "eventworker inbox purge",
    "eventworker inbox purge --older-than 86400 --handler send_welcome_mail",
)
@inbox.command()
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Remove entries completed more than SECONDS ago (default: inbox.retention); 0 "
    "removes every completed entry.",
)
@click.option("--handler", "handler_name", default=None, help="Only this handler's entries.")
@config_option
@store_option
def purge(
    older_than: float | None, handler_name: str | None, config: str | None, store_url: str | None
) -> None:
    """Remove completed entries older than the retention, and abandoned claims.

    A claim still held under its lease is never removed. A removed entry no longer stops a
    duplicate of its event from running again.
    """
    with errors():
        settings = _settings(config, store_url)
        seconds = settings.retention if older_than is None else older_than
        removed = _with_store(
            settings, lambda store: store.purge(older_than=seconds, handler=handler_name)
        )
    click.echo(f"removed {removed} entries older than {seconds:g}s from {settings.redacted_url()}")
