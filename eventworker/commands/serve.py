"""``eventworker serve``: the HTTP ingress (needs the ``http`` extra: FastAPI and uvicorn)."""

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
    "eventworker serve --port 8080",
    'curl -X POST localhost:8080/events/orders.created -d \'{"order_id": "o-1"}\'',
)
@click.command()
@config_option
@url_option
@click.option("--host", default=None, help="Address to listen on (default: http.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: http.port, 8080)."
)
@click.option(
    "--log-level",
    type=click.Choice(["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level (default: the log_level setting).",
)
def serve(
    config: str | None, url: str | None, host: str | None, port: int | None, log_level: str | None
) -> None:
    """Serve the HTTP ingress until SIGTERM/SIGINT.

    POST /events/{routing_key} with a JSON body, or POST /events with NDJSON lines
    {"routing_key": ..., "data": ...}: 202 only once the broker confirmed each event; 4xx for
    bad input, 503 while the broker is unreachable. OpenAPI: /openapi.json and /docs (behind
    the same token and signature by default: setting http.docs).
    """
    from eventworker.observability import logs

    with errors():
        base = load_settings(config, url=url, log_level=log_level and log_level.upper())
        given = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        settings = (
            load_settings(
                config,
                url=url,
                log_level=log_level and log_level.upper(),
                http=base.http.model_dump() | given,
            )
            if given
            else base
        )
        logs.configure(settings.log_level)
        try:
            from eventworker.publishing.http_server import server as http_server
            from eventworker.publishing.ingress import create_app
        except ImportError as exc:
            raise ConfigError(
                f"eventworker serve needs the http extra (pip install 'eventworker[http]'): {exc}"
            ) from None
        app = create_app(settings)
        from loguru import logger

        logger.info(
            "HTTP ingress on http://{}:{} -> exchange {!r} at {}; allowed keys {}",
            settings.http.host,
            settings.http.port,
            settings.exchange,
            settings.redacted_url(),
            ", ".join(settings.http.allowed_keys),
        )
        server = http_server(app, settings.http)
        serve_until_signal(server, f"{settings.http.host}:{settings.http.port}")
