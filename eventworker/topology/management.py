"""The RabbitMQ management HTTP API, read with the ``management_url`` setting: one GET of a path
under ``/api/``, its JSON answer. Credentials are the ones in ``management_url``, else those of
the broker URL; no message ever shows a password."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from eventworker.errors import BrokerError
from eventworker.settings import Settings, redact_url


def vhost(amqp_url: str) -> str:
    """The virtual host of an AMQP URL: its path, percent-decoded; ``/`` when empty."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def vhost_path(settings: Settings) -> str:
    """The settings' virtual host as one path segment of the API."""
    return quote(vhost(settings.url.get_secret_value()), safe="")


async def get(settings: Settings, path: str, *, timeout: float) -> Any:
    """The JSON answer of ``GET <management_url>/api/<path>``.

    Raises:
        BrokerError: the API could not be reached, refused, or did not answer JSON.
    """
    # Imported here: a worker reads the API only for an answer a person asks for (which
    # worker emits the schedules), and aiohttp's client is about 10 MB of RSS it would carry.
    import aiohttp

    base = settings.management_url.get_secret_value()
    parts = urlsplit(base)
    user, password = parts.username, parts.password
    if user is None:
        amqp = urlsplit(settings.url.get_secret_value())
        user, password = amqp.username or "guest", amqp.password or "guest"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    endpoint = parts._replace(netloc=netloc).geturl().rstrip("/") + "/api/" + path
    # The header, not ClientSession(auth=BasicAuth(...)): aiohttp deprecates both.
    auth = {"Authorization": aiohttp.encode_basic_auth(unquote(user), unquote(password or ""))}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(endpoint, headers=auth) as response,
        ):
            if response.status != 200:
                raise BrokerError(
                    f"management API at {redact_url(base)} answered {response.status}"
                )
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else exc
        raise BrokerError(f"management API at {redact_url(base)} failed: {reason}") from None


async def connection_names(settings: Settings, *, timeout: float) -> dict[str, str]:
    """The settings' virtual host's connections: the broker's name of each (``host:port ->
    host:port``, what consumer rows point to) to the name its client gave it (eventworker's
    say role, host and pid), or to the broker's where none was given.

    Raises:
        BrokerError: the API could not be reached, refused, or did not answer JSON.
    """
    rows = await get(
        settings,
        f"vhosts/{vhost_path(settings)}/connections?columns=name,user_provided_name",
        timeout=timeout,
    )
    return {str(r["name"]): str(r.get("user_provided_name") or r["name"]) for r in rows}


def connection_of(consumer: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """The name of the connection a consumer (a row of the API's consumer lists) reads on, as
    :func:`connection_names` gives it."""
    broker_name = str((consumer.get("channel_details") or {}).get("connection_name", ""))
    return names.get(broker_name) or broker_name
