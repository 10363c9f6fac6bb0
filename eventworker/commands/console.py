"""``eventworker console``: the operator console in the browser (needs the ``console`` extra)."""

from __future__ import annotations

import click

from eventworker.commands import (
    config_option,
    errors,
    examples,
    serve_until_signal,
    url_option,
)
from eventworker.errors import ConfigError
from eventworker.settings import load_settings


@examples(
    "eventworker console",
    "eventworker console --port 8025 --allow-actions",
    'EVENTWORKER_CONSOLE__TOKENS=\'{"alice": "s3cret"}\' eventworker console --host 0.0.0.0',
)
@click.command()
@config_option
@url_option
@click.option(
    "--host", default=None, help="Address to listen on (default: console.host, 127.0.0.1)."
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port (default: console.port, 8025).",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    default=None,
    help="Let its users replay and purge dead letters (the operator role); without it (and "
    "console.allow_actions) the console is read-only.",
)
def console(
    config: str | None,
    url: str | None,
    host: str | None,
    port: int | None,
    allow_actions: bool | None,
) -> None:
    """Serve the operator console: handlers, backlogs, dead letters with their diagnosis,
    replay and purge, and the event catalogue, as web pages.

    It reads the broker over AMQP (no database of its own) and listens on 127.0.0.1 unless
    told otherwise; anywhere else it needs console.tokens or console.trusted_user_header.
    Every page is read-only; replay and purge need --allow-actions, a confirmation, and a
    CSRF token, and each writes an audit log line naming who did it.
    """
    from eventworker.observability import logs
    from eventworker.plugins import discovery

    with errors():
        base = load_settings(config, url=url)
        given = {
            k: v
            for k, v in {"host": host, "port": port, "allow_actions": allow_actions}.items()
            if v is not None
        }
        settings = (
            load_settings(config, url=url, console=base.console.model_dump() | given)
            if given
            else base
        )
        logs.configure(settings.log_level)
        try:
            import uvicorn

            from eventworker.console.app import create_app
            from eventworker.console.auth import check_bind
        except ImportError as exc:
            raise ConfigError(
                f"eventworker console needs the console extra "
                f"(pip install 'eventworker[console]'): {exc}"
            ) from None
        check_bind(settings.console, settings.console.host)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        app = create_app(settings, registrations)
        from loguru import logger

        logger.info(
            "console on http://{}:{}/ ({}) for exchange {!r} at {}",
            settings.console.host,
            settings.console.port,
            "operator role: replay and purge allowed"
            if settings.console.allow_actions
            else "read-only",
            settings.exchange,
            settings.redacted_url(),
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.console.host,
                port=settings.console.port,
                log_level="warning",
                server_header=False,
            )
        )
        serve_until_signal(server, f"{settings.console.host}:{settings.console.port}")
