"""The broker's bindings, which AMQP 0-9-1 cannot list: read from the management HTTP API when
``management_url`` is set, else with ``rabbitmqctl`` when the broker runs on this host.

``topology plan|apply`` needs them, to find bindings that are missing or left over
(``eventworker schedules`` asks the same API which consumer of a queue is the active one). Without
a source, the plan says bindings were not compared, and ``apply`` still declares every binding
it needs (declaring one is idempotent) but cannot remove stale ones.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from eventworker.errors import BrokerError
from eventworker.settings import Settings, redact_url

#: Hosts for which ``rabbitmqctl`` (which talks to the local node) sees the broker of the URL.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class LiveBinding:
    """A binding of an exchange to a queue (or, ``to_exchange``, to the exchange ``queue``
    names), as the broker has it."""

    exchange: str
    queue: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...] = ()
    to_exchange: bool = False

    @classmethod
    def of(
        cls,
        exchange: str,
        queue: str,
        routing_key: str,
        arguments: Mapping[str, Any],
        *,
        to_exchange: bool = False,
    ) -> LiveBinding:
        return cls(exchange, queue, routing_key, tuple(sorted(arguments.items())), to_exchange)


@dataclass(frozen=True, slots=True)
class Reading:
    """The bindings read (None: not read), and where from or why not."""

    bindings: tuple[LiveBinding, ...] | None
    source: str


def vhost(amqp_url: str) -> str:
    """The virtual host of an AMQP URL: its path, percent-decoded; ``/`` when empty."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def read(settings: Settings, *, timeout: float = 30.0) -> Reading:
    """The bindings of the settings' virtual host, from the best source available."""
    url = settings.url.get_secret_value()
    if settings.management_url.get_secret_value():
        return Reading(tuple(await from_management(settings, timeout=timeout)), "management API")
    host = urlsplit(url).hostname or "localhost"
    if host not in LOCAL_HOSTS:
        return Reading(None, "not compared: the broker is not local and management_url is unset")
    if shutil.which("rabbitmqctl") is None:
        return Reading(None, "not compared: no rabbitmqctl here and management_url is unset")
    found = await asyncio.to_thread(from_rabbitmqctl, vhost(url), timeout=timeout)
    return Reading(tuple(found), "rabbitmqctl")


def from_rabbitmqctl(virtual_host: str, *, timeout: float) -> list[LiveBinding]:
    """Bindings to queues and exchanges, from ``rabbitmqctl list_bindings`` on this host.

    Raises:
        BrokerError: rabbitmqctl failed (node down, no permission to its Erlang cookie).
    """
    command = [
        "rabbitmqctl",
        "list_bindings",
        "-p",
        virtual_host,
        "-q",
        "--formatter",
        "json",
        "source_name",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"rabbitmqctl list_bindings failed: {exc}") from exc
    if done.returncode != 0:
        raise BrokerError(f"rabbitmqctl list_bindings failed: {done.stderr.strip()[:300]}")
    return [
        LiveBinding.of(
            row["source_name"],
            row["destination_name"],
            row["routing_key"],
            {key: value for key, _type, value in row.get("arguments") or []},
            to_exchange=row.get("destination_kind") == "exchange",
        )
        for row in json.loads(done.stdout or "[]")
        if row.get("destination_kind") in ("queue", "exchange")
    ]


async def from_management(settings: Settings, *, timeout: float) -> list[LiveBinding]:
    """Bindings to queues and exchanges, from ``GET <management_url>/api/bindings/<vhost>``.

    Raises:
        BrokerError: the API could not be reached or refused; the message shows no password.
    """
    rows = await management_get(settings, "bindings", timeout=timeout)
    return [
        LiveBinding.of(
            row["source"],
            row["destination"],
            row["routing_key"],
            row.get("arguments") or {},
            to_exchange=row.get("destination_type") == "exchange",
        )
        for row in rows
        if row.get("destination_type") in ("queue", "exchange")
    ]


async def management_get(
    settings: Settings, kind: str, name: str = "", *, timeout: float = 30.0
) -> Any:
    """The JSON of ``GET <management_url>/api/<kind>/<vhost>[/<name>]`` (``bindings``, or
    ``queues`` and a queue's name). Credentials are the ones in ``management_url``, else
    those of the broker URL.

    Raises:
        BrokerError: the API could not be reached or refused; the message shows no password.
    """
    base = settings.management_url.get_secret_value()
    parts = urlsplit(base)
    user, password = parts.username, parts.password
    if user is None:
        amqp = urlsplit(settings.url.get_secret_value())
        user, password = amqp.username or "guest", amqp.password or "guest"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    virtual_host = vhost(settings.url.get_secret_value())
    endpoint = parts._replace(netloc=netloc).geturl().rstrip("/")
    endpoint += f"/api/{kind}/{quote(virtual_host, safe='')}"
    if name:
        endpoint += f"/{quote(name, safe='')}"
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
