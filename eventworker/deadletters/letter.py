"""A dead letter as an operator sees it: its diagnosis, a safe preview of its body, the copy a
replay sends, and the NDJSON record ``dlq export`` writes and ``publish --exported`` reads.

Pure: reads any object with the attributes of :class:`eventworker.envelope.AmqpMessage`. Three
kinds of messages sit in a dead-letter queue: copies eventworker dead-lettered (diagnosis in
``x-eventworker-*`` headers), messages the broker moved itself, past the quorum delivery
limit (diagnosis only in ``x-death``), and messages whose AMQP header cannot be decoded, which
the worker rejected to it as they were (``x-death`` says ``rejected``): their diagnosis,
reason ``undecodable`` and the decode error, is read from their bytes each time they are
shown (a :class:`~eventworker.amqp.delivery.Delivery`'s ``undecodable``). The unrouted queue
holds plain events.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from eventworker import envelope
from eventworker.amqp.properties import UndecodableProperties
from eventworker.errors import InvalidInputError
from eventworker.observability.logs import one_line

#: Properties an export record keeps, and a replay copy carries over.
PROPERTIES = (
    "message_id",
    "correlation_id",
    "type",
    "app_id",
    "content_type",
    "content_encoding",
    "priority",
)


@dataclass(frozen=True, slots=True)
class Letter:
    """What ``dlq show`` lists of one message. ``None`` where the message does not say."""

    id: str | None
    routing_key: str
    reason: str
    exception: str
    error: str
    attempts: int | None
    handler: str
    host: str
    first_failure: str | None
    last_failure: str | None
    dead_lettered_at: datetime | None
    replays: int
    size: int
    preview: str
    #: The property bytes as received (base64) of a message whose header cannot be decoded.
    header_base64: str | None = None
    #: The handler's traceback as the worker recorded it (``x-eventworker-traceback``).
    traceback: str = ""

    def age(self, now: datetime) -> float | None:
        """Seconds since it was dead-lettered, when known."""
        return (now - self.dead_lettered_at).total_seconds() if self.dead_lettered_at else None


def age_label(seconds: float | None) -> str:
    """An age as operators read it: 42s, 3.5m, 2.0h, 1.5d ("-" when unknown)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The newest ``x-death`` entry (the broker puts it first), or an empty mapping."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def routing_key(message: envelope.AmqpMessage) -> str:
    """The routing key the producer published with: our header on copies we dead-lettered, else the
    one ``x-death`` recorded (a message the broker moved), else the delivery's own."""
    headers = message.headers or {}
    ours = _text(headers.get(envelope.ROUTING_KEY))
    if ours:
        return ours
    keys = _death(headers).get("routing-keys")
    if isinstance(keys, list) and keys:
        return _text(keys[0])
    return message.routing_key or ""


def preview(body: bytes, limit: int) -> str:
    """At most ``limit`` characters of the body on one line, control characters escaped, so a
    body can neither flood a terminal nor forge output lines. Empty when ``limit`` is 0."""
    if limit <= 0:
        return ""
    text = body[: limit * 4].decode("utf-8", "replace")
    shown = one_line(text[:limit], limit * 4)
    return shown + ("..." if len(text) > limit or len(body) > limit * 4 else "")


def undecodable(message: envelope.AmqpMessage) -> tuple[str, UndecodableProperties | None]:
    """Why ``message`` cannot be decoded ("" when it can), and its properties when they are
    what could not be."""
    problem = getattr(message, "undecodable", None)
    properties = getattr(message, "properties", None)
    bad = properties if isinstance(properties, UndecodableProperties) else None
    return (problem if isinstance(problem, str) else ""), bad


def diagnose(
    message: envelope.AmqpMessage, *, preview_chars: int, default_reason: str = "unknown"
) -> Letter:
    """The diagnosis of one dead letter: from our headers, the broker's ``x-death``, or,
    for a message that cannot be decoded, its bytes (reason ``undecodable``)."""
    headers = message.headers or {}
    death = _death(headers)
    attempt = headers.get(envelope.ATTEMPT)
    replays = headers.get(envelope.REPLAYS)
    last = _text(headers.get(envelope.LAST_FAILURE)) or None
    dead_lettered_at = (
        _parse_time(last) or _as_time(death.get("time")) or _as_time(message.timestamp)
    )
    problem, bad = undecodable(message)
    unreadable_id = bad.unreadable.get("message_id") if bad is not None else None
    reason = _text(headers.get(envelope.REASON)) or _text(death.get("reason")) or default_reason
    return Letter(
        id=_text(message.message_id) or unreadable_id or None,
        routing_key=routing_key(message),
        reason=envelope.UNDECODABLE if problem else reason,
        exception=_text(headers.get(envelope.EXCEPTION)),
        error=problem or _text(headers.get(envelope.ERROR_MESSAGE)),
        attempts=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        handler=_text(headers.get(envelope.HANDLER)),
        host=_text(headers.get(envelope.HOST)),
        first_failure=_text(headers.get(envelope.FIRST_FAILURE)) or None,
        last_failure=last,
        dead_lettered_at=dead_lettered_at,
        replays=replays if isinstance(replays, int) and not isinstance(replays, bool) else 0,
        size=len(message.body),
        preview=preview(message.body, preview_chars),
        header_base64=base64.b64encode(bad.raw).decode("ascii") if bad is not None else None,
        traceback=_text(headers.get(envelope.TRACEBACK)),
    )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return _as_time(datetime.fromisoformat(text))
    except ValueError:
        return None


def _as_time(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def replay_properties(message: envelope.AmqpMessage, *, return_to: str | None) -> dict[str, Any]:
    """Keyword arguments for the properties of the copy a replay publishes (pamqp's names, as
    ``amqp.properties.Properties.build`` takes them): the body's properties and the producer's
    headers as they were, the attempt count reset to 1, the replay count raised, and the
    diagnosis dropped (a new failure writes a new one).

    With ``return_to`` the copy is for the return exchange, which routes it to that work queue
    only. The worker reads it as a first delivery (no retry queue expired it), so the copy is
    sent with the producer's routing key; the routing-key header stays for the dead-letter
    tools.
    """
    headers = message.headers or {}
    previous = headers.get(envelope.REPLAYS)
    carried = envelope.carried_headers(headers)
    causation = _text(headers.get(envelope.CAUSATION_ID))
    if causation:
        carried[envelope.CAUSATION_ID] = causation
    carried[envelope.REPLAYS] = (previous if isinstance(previous, int) else 0) + 1
    if return_to is not None:
        carried[envelope.ROUTING_KEY] = routing_key(message)
        carried[envelope.ATTEMPT] = 1
        carried[envelope.RETURN_TO] = return_to
    properties = {name: getattr(message, name, None) for name in PROPERTIES}
    properties["message_type"] = properties.pop("type")
    return {**properties, "timestamp": message.timestamp, "headers": carried}


# -- export records -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """AMQP table values as JSON: times as ISO 8601, bytes as text, decimals as strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return str(value)
    return value


def export_record(message: envelope.AmqpMessage) -> bytes:
    """One NDJSON line (without the newline) holding everything to publish the event again:
    routing key, body (as text when it is UTF-8, else base64), properties and headers. A
    message whose header cannot be decoded has what could be read of them, and ``reason``
    (``undecodable``), ``error`` and ``header_base64`` (the property bytes as received)."""
    record: dict[str, Any] = {"routing_key": routing_key(message)}
    try:
        record["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(message.body).decode("ascii")
    properties = {name: getattr(message, name, None) for name in PROPERTIES}
    properties["timestamp"] = message.timestamp
    record["properties"] = _jsonable({k: v for k, v in properties.items() if v is not None})
    record["headers"] = _jsonable(dict(message.headers or {}))
    problem, bad = undecodable(message)
    if problem:
        record["reason"], record["error"] = envelope.UNDECODABLE, problem
        if bad is not None:
            record["header_base64"] = base64.b64encode(bad.raw).decode("ascii")
    return orjson.dumps(record)


@dataclass(frozen=True, slots=True)
class Exported:
    """An export record read back: what ``eventworker publish --exported`` sends."""

    routing_key: str
    body: bytes
    id: str | None
    correlation_id: str | None
    causation_id: str | None
    timestamp: datetime | None
    headers: dict[str, Any]


def read_record(line: bytes, where: str) -> Exported:
    """Parse one line written by :func:`export_record`.

    The producer's headers come back; the diagnosis, ``x-death`` and routing headers do not.

    Raises:
        InvalidInputError: the line is not such a record, or the record of a message whose
            header could not be decoded; the message names ``where``.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("routing_key"), str):
        raise InvalidInputError(f"{where}: not an export record (no routing_key)")
    if record.get("reason") == envelope.UNDECODABLE:
        raise InvalidInputError(
            f"{where}: a message whose AMQP header could not be decoded ({record.get('error')}); "
            f"it cannot be published as it was (its header_base64 holds the bytes)"
        )
    try:
        if isinstance(record.get("body"), str):
            body = record["body"].encode("utf-8")
        else:
            body = base64.b64decode(str(record["body_base64"]), validate=True)
    except (KeyError, binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{where}: the record has no readable body") from None
    properties = record.get("properties", {})
    headers = record.get("headers", {})
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise InvalidInputError(f"{where}: properties and headers must be JSON objects")
    return Exported(
        routing_key=record["routing_key"],
        body=body,
        id=_text(properties.get("message_id")) or None,
        correlation_id=_text(properties.get("correlation_id")) or None,
        causation_id=_text(headers.get(envelope.CAUSATION_ID)) or None,
        timestamp=_parse_time(_text(properties.get("timestamp"))),
        headers=envelope.carried_headers(headers),
    )
