"""The broker's bindings, which AMQP 0-9-1 cannot list: read from the management HTTP API when
``management_url`` is set, else with ``rabbitmqctl`` when the broker runs on this host.

Only ``topology plan|apply`` needs them, to find bindings that are missing or left over. Without
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
from urllib.parse import urlsplit

from eventworker.errors import BrokerError
from eventworker.settings import Settings
from eventworker.topology import management
from eventworker.topology.management import vhost

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
    Credentials are the ones in ``management_url``, else those of the broker URL.

    Raises:
        BrokerError: the API could not be reached or refused; the message shows no password.
    """
    rows = await management.get(
        settings, f"bindings/{management.vhost_path(settings)}", timeout=timeout
    )
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
