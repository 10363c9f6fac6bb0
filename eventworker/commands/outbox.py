"""``eventworker outbox``: create the outbox table; run the relay that publishes it."""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from pathlib import Path

import click
from pydantic import SecretStr

from eventworker.commands import config_option, errors, examples, url_option
from eventworker.errors import ConfigError
from eventworker.settings import Settings, load_settings, redact_url


def _dsn(settings: Settings) -> SecretStr:
    if settings.outbox.dsn is None:
        raise ConfigError("no outbox database: give --dsn or set EVENTWORKER_OUTBOX__DSN")
    return settings.outbox.dsn


def _settings(config: str | None, top: dict[str, object], **outbox: object) -> Settings:
    """Settings with options ``top`` and ``[outbox]`` options (None = not given) laid over the
    file's and the environment's."""
    base = load_settings(config, **top)
    given = {k: v for k, v in outbox.items() if v is not None}
    return load_settings(config, **top, outbox=base.outbox.model_dump() | given) if given else base


dsn_option = click.option(
    "--dsn",
    default=None,
    help="The outbox database: postgresql://user:password@host/db or sqlite:///path/to.db. "
    "Prefer $EVENTWORKER_OUTBOX__DSN: other users can read the command line.",
)
table_option = click.option(
    "--table", default=None, help="The outbox table (default: outbox.table setting)."
)


@examples(
    "eventworker outbox init --dsn postgresql://app@db/app",
    "eventworker outbox relay --dsn postgresql://app@db/app",
)
@click.group("outbox")
def outbox_group() -> None:
    """The transactional outbox: events written in the application's own transaction, then
    published by a relay with confirms."""


@examples(
    "eventworker outbox init --dsn postgresql://app@db/app",
    "eventworker outbox init --dsn sqlite:///var/lib/app/app.db --table events_outbox",
)
@outbox_group.command("init")
@config_option
@dsn_option
@table_option
def init(config: str | None, dsn: str | None, table: str | None) -> None:
    """Create the outbox table, its indexes and (PostgreSQL) its NOTIFY trigger. Idempotent."""
    from eventworker.outbox import table as outbox

    with errors():
        settings = _settings(config, {}, dsn=dsn, table=table)
        url = _dsn(settings).get_secret_value()
        name = outbox.check_table(settings.outbox.table)
        if url.startswith("sqlite:///"):
            import sqlite3

            with sqlite3.connect(Path(url.removeprefix("sqlite:///"))) as conn:
                outbox.create(conn, name)
        elif url.startswith(("postgresql://", "postgres://")):
            asyncio.run(_init_postgres(url, name))
        else:
            raise ConfigError(
                f"outbox DSN {redact_url(url)[:100]!r}: expected postgresql:// or sqlite:///"
            )
    click.echo(f"outbox table {name!r} ready in {redact_url(url)}")


async def _init_postgres(url: str, table: str) -> None:
    import asyncpg

    from eventworker.errors import OutboxError
    from eventworker.outbox import table as outbox

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise OutboxError(f"cannot connect to {redact_url(url)}: {redact_url(str(exc))}") from None
    try:
        async with conn.transaction():
            await outbox.create(conn, table)
    except asyncpg.PostgresError as exc:
        raise OutboxError(f"cannot create the outbox table: {exc}") from None
    finally:
        await conn.close()


@examples(
    "eventworker outbox relay --dsn postgresql://app@db/app",
    "eventworker outbox relay --batch-size 500 --retention 86400",
)
@outbox_group.command("relay")
@config_option
@url_option
@dsn_option
@table_option
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=None, help="Rows per batch.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Seconds between looks at the table when no NOTIFY woke the relay.",
)
@click.option(
    "--retention",
    type=click.FloatRange(0),
    default=None,
    help="Seconds sent rows are kept; 0 deletes them once sent.",
)
@click.option(
    "--log-level",
    type=click.Choice(["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level (default: the log_level setting).",
)
def relay(
    config: str | None,
    url: str | None,
    dsn: str | None,
    table: str | None,
    batch_size: int | None,
    poll_interval: float | None,
    retention: float | None,
    log_level: str | None,
) -> None:
    """Publish pending outbox rows with confirms and mark them sent, until SIGTERM/SIGINT.

    Rows of one aggregate key are published in order; several relays may run at once
    (PostgreSQL) without sending a row twice. A crash gives at most a duplicate with the same
    event id. The batch in progress is finished before the relay exits.
    """
    from eventworker.observability import logs

    with errors():
        settings = _settings(
            config,
            {"url": url, "log_level": log_level and log_level.upper()},
            dsn=dsn,
            table=table,
            batch_size=batch_size,
            poll_interval=poll_interval,
            retention=retention,
        )
        logs.configure(settings.log_level)
        asyncio.run(_relay(settings))


async def _relay(settings: Settings) -> None:
    from loguru import logger

    from eventworker.outbox import table as outbox
    from eventworker.outbox.relay import Relay, RelayOptions
    from eventworker.outbox.store import open_store
    from eventworker.publishing.publisher import Publisher

    o = settings.outbox
    dsn = _dsn(settings)
    table = outbox.check_table(o.table)
    options = RelayOptions(
        batch_size=o.batch_size, poll_interval=o.poll_interval, retention=o.retention
    )
    publisher = Publisher.from_settings(settings)
    await publisher.open()
    try:
        relay = Relay(
            partial(open_store, dsn, table=table, delete_sent=o.retention == 0),
            publisher,
            options,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        logger.info(
            "outbox relay: table {} in {} -> exchange {!r} at {}; batch {}, poll {:g}s, "
            "retention {:g}s",
            table,
            redact_url(dsn.get_secret_value()),
            settings.exchange,
            settings.redacted_url(),
            o.batch_size,
            o.poll_interval,
            o.retention,
        )
        await relay.run()
    finally:
        await publisher.close()
    logger.info("outbox relay stopped: {} row(s) sent, {} failed", relay.sent, relay.failed)
