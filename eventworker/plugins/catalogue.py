"""The event catalogue: an AsyncAPI 3.0 document of what the installed handlers consume and
publish, with the queues, retry policies and dead-letter queues a worker gives them.

Each handler's work queue and dead-letter queue are channels with AMQP queue bindings; each
event a handler declares it publishes (``@handler(publishes=...)``) is a channel on the
exchange with an AMQP routing-key binding. What AsyncAPI's AMQP bindings cannot say (binding
keys, retry policies and retry queues, the return exchange) goes in ``x-eventworker-*``
extensions. Payload schemas are the pydantic models' JSON Schemas. Pure: no broker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from eventworker.envelope import JSON
from eventworker.plugins.discovery import Registration
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import Settings, split_urls
from eventworker.topology import layout

ASYNCAPI_VERSION = "3.0.0"
#: The version of AsyncAPI's AMQP bindings used (0.3.0: the one AsyncAPI 3.0 knows).
AMQP_BINDING = "0.3.0"
#: The message of a handler or event without a model: any JSON value.
ANY_EVENT = "AnyEvent"
_SCHEMAS = "#/components/schemas/"
_NOT_AN_ID = re.compile(r"[^\w.\-]")


def document(
    registrations: Sequence[Registration],
    resolved: Sequence[ResolvedHandler],
    settings: Settings,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``registrations`` (as :func:`resolve` resolved them)."""
    vhost = _vhost(settings)
    exchange = {
        "name": settings.exchange,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": vhost,
    }
    models = {
        model
        for reg in registrations
        for model in (reg.handler.model, *(m for _, m in reg.handler.publishes))
        if model is not None
    }
    schemas = _schemas(models)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    ids: set[str] = set()  # channel ids
    op_ids: set[str] = set()

    def message(model: type[BaseModel] | None) -> str:
        name = schemas[1].get(model, ANY_EVENT) if model is not None else ANY_EVENT
        if name not in messages:
            messages[name] = {
                "name": name,
                "title": name,
                "contentType": JSON,
                "payload": (
                    {"$ref": _SCHEMAS + name}
                    if model is not None
                    else {"description": "Any JSON value: the handler declares no model."}
                ),
            }
            if model is not None and model.__doc__:
                messages[name]["summary"] = " ".join(model.__doc__.split())
        return name

    def queue_channel(address: str, description: str, msg: str, **extensions: Any) -> str:
        channel_id = _unique(address, ids)
        channels[channel_id] = {
            "address": address,
            "description": description,
            "messages": {msg: {"$ref": f"#/components/messages/{msg}"}},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": address,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                    "bindingVersion": AMQP_BINDING,
                }
            },
            **extensions,
        }
        return channel_id

    published: dict[str, str] = {}  # routing key -> channel id, one channel per key
    for reg, route in zip(registrations, resolved, strict=True):
        h = reg.handler
        msg = message(h.model)
        work = queue_channel(
            route.queue,
            f"Work queue of handler {h.name}, bound to exchange {settings.exchange} with "
            f"{', '.join(h.bindings)}.",
            msg,
            **{
                "x-eventworker-exchange": settings.exchange,
                "x-eventworker-binding-keys": list(h.bindings),
                "x-eventworker-dead-letter-queue": route.dead_letter_queue,
                **(
                    {"x-eventworker-probation-queue": route.probation_queue}
                    if route.probation_queue
                    else {}
                ),
                **(
                    {"x-eventworker-single-active-consumer": True}
                    if h.single_active_consumer
                    else {}
                ),
            },
        )
        dead = queue_channel(
            route.dead_letter_queue,
            f"Dead letters of handler {h.name}: events it failed for good, with the diagnosis "
            f"in x-eventworker-* headers, until replayed or purged (eventworker dlq).",
            msg,
            **{"x-eventworker-handler": h.name},
        )
        operations[_unique(h.name, op_ids)] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_pointer(work)}"},
            "summary": _summary(h.func),
            "messages": [{"$ref": f"#/channels/{_pointer(work)}/messages/{msg}"}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
            "x-eventworker-handler": {
                "name": h.name,
                "module": h.module,
                "plugin": reg.plugin.entry_point,
                "distribution": reg.plugin.distribution,
                "version": reg.plugin.version,
            },
            "x-eventworker-retry": {
                "maxAttempts": route.policy.max_attempts,
                "delays": list(route.policy.delays),
                "retryQueues": [route.retry_queues[d] for d in sorted(set(route.policy.delays))],
                "returnExchange": layout.return_exchange(settings.exchange),
                "retryOn": [_qualname(t) for t in h.retry_on],
                "giveUpOn": [_qualname(t) for t in h.give_up_on],
            },
            "x-eventworker-dead-letter-channel": {"$ref": f"#/channels/{_pointer(dead)}"},
            "x-eventworker-concurrency": route.concurrency,
            "x-eventworker-prefetch": route.prefetch,
            "x-eventworker-timeout": route.timeout,
            "x-eventworker-idempotent": route.idempotent,
        }
        for index, (key, model) in enumerate(h.publishes, 1):
            out = message(model)
            if key not in published:
                published[key] = _unique(key, ids)
                channels[published[key]] = {
                    "address": key,
                    "description": (
                        f"Events published to exchange {settings.exchange} with routing key "
                        f"{key}" + (" (a * or # word stands for any)." if _wild(key) else ".")
                    ),
                    "messages": {},
                    "bindings": {
                        "amqp": {
                            "is": "routingKey",
                            "exchange": exchange,
                            "bindingVersion": AMQP_BINDING,
                        }
                    },
                }
            channel_id = published[key]
            channels[channel_id]["messages"][out] = {"$ref": f"#/components/messages/{out}"}
            operations[_unique(f"{h.name}.publishes.{index}", op_ids)] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(channel_id)}"},
                "summary": f"Handler {h.name} publishes {key}, confirmed by the broker.",
                "messages": [{"$ref": f"#/channels/{_pointer(channel_id)}/messages/{out}"}],
                "bindings": {
                    "amqp": {
                        "deliveryMode": 2,
                        "mandatory": True,
                        "timestamp": True,
                        "bindingVersion": AMQP_BINDING,
                    }
                },
                "x-eventworker-handler": {"name": h.name},
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"eventworker handlers on exchange {settings.exchange}",
            "version": _version(),
            "description": (
                "The events the installed eventworker handlers consume from the topic exchange "
                "and the events they publish to it. Message bodies are JSON; metadata rides in "
                "AMQP properties (message_id, type = routing key, timestamp, correlation_id) and "
                "x-eventworker-* headers."
            ),
        },
        "defaultContentType": JSON,
        "servers": _servers(settings),
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas[0], "messages": messages},
        "x-eventworker-exchange": {
            **exchange,
            "returnExchange": layout.return_exchange(settings.exchange),
            **(
                {
                    "alternateExchange": layout.unrouted_exchange(settings.exchange),
                    "unroutedQueue": settings.unrouted_queue,
                }
                if settings.unrouted_queue
                else {}
            ),
        },
        "x-eventworker-queue-type": settings.queue_type,
        "x-eventworker-plugins": [
            {"entryPoint": entry_point, "distribution": dist, "version": ver}
            for entry_point, dist, ver in sorted(
                {
                    (r.plugin.entry_point, r.plugin.distribution, r.plugin.version)
                    for r in registrations
                }
            )
        ],
    }


def _schemas(
    models: set[type[BaseModel]],
) -> tuple[dict[str, Any], dict[type[BaseModel], str]]:
    """Every model's JSON Schema (and those of the models it nests) under one name each, with
    references between them into ``#/components/schemas``; and each model's name there."""
    ordered = sorted(models, key=lambda m: (m.__module__, m.__qualname__))
    keys, defs = models_json_schema(
        [(m, "validation") for m in ordered], ref_template=_SCHEMAS + "{model}"
    )
    names = {m: keys[(m, "validation")]["$ref"].removeprefix(_SCHEMAS) for m in ordered}
    return dict(defs.get("$defs", {})), names


def _servers(settings: Settings) -> dict[str, Any]:
    """The broker URLs without their credentials, one server each."""
    servers: dict[str, Any] = {}
    for index, url in enumerate(split_urls(settings.url.get_secret_value()), 1):
        parts = urlsplit(url)
        secure = parts.scheme == "amqps"
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or (5671 if secure else 5672)
        servers["broker" if index == 1 else f"broker-{index}"] = {
            "host": f"{host}:{port}",
            "protocol": "amqps" if secure else "amqp",
            "protocolVersion": "0.9.1",
            "pathname": "/" + unquote(parts.path[1:]) if parts.path[1:] else "/",
        }
    return servers


def _vhost(settings: Settings) -> str:
    path = urlsplit(split_urls(settings.url.get_secret_value())[0]).path
    return unquote(path[1:]) if path[1:] else "/"


def _unique(name: str, taken: set[str]) -> str:
    """An id for a channel or operation: ``name`` with characters other than letters, digits,
    ``.``, ``-`` and ``_`` replaced by ``_``, unique among ``taken`` (which it joins)."""
    base = _NOT_AN_ID.sub("_", name) or "_"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def _pointer(key: str) -> str:
    """``key`` as one JSON Pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")


def _wild(key: str) -> bool:
    return any(word in ("*", "#") for word in key.split("."))


def _summary(func: Any) -> str:
    doc = getattr(func, "__doc__", None)
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else "Handles these events."


def _qualname(kind: type[BaseException]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _version() -> str:
    try:
        return version("eventworker")
    except PackageNotFoundError:
        return "0"
