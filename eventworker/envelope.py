"""The wire format: an AMQP message <-> an :class:`Event`.

Body = the event's data as JSON. Metadata rides in native AMQP properties (``message_id``,
``type``, ``timestamp``, ``app_id``, ``correlation_id``) so any AMQP client can produce events,
plus ``x-eventworker-*`` headers for what AMQP has no property for. CloudEvents binary-mode
``ce-*`` headers are understood as fallbacks. This module knows no aio-pika: it reads any object
with the attributes of :class:`AmqpMessage` and returns plain keyword arguments for a message.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

import orjson

from eventworker.errors import EnvelopeError

#: Our headers. Attempt and routing key are trusted only on messages our retry tiers sent back
#: (the return exchange delivered them, and their ``x-death`` names one of our retry queues).
ATTEMPT = "x-eventworker-attempt"
#: Which work queue a retry copy returns to. No ``x-`` prefix: RabbitMQ's headers exchange
#: ignores ``x-`` headers when matching, and this one is matched by the return exchange.
RETURN_TO = "eventworker-return-to"
ROUTING_KEY = "x-eventworker-routing-key"
CAUSATION_ID = "x-eventworker-causation-id"
FIRST_FAILURE = "x-eventworker-first-failure"
LAST_FAILURE = "x-eventworker-last-failure"
REASON = "x-eventworker-reason"
EXCEPTION = "x-eventworker-exception"
ERROR_MESSAGE = "x-eventworker-error"
TRACEBACK = "x-eventworker-traceback"
HANDLER = "x-eventworker-handler"
HOST = "x-eventworker-host"
#: How often ``eventworker dlq replay`` sent this message back; kept by retry and dead-letter
#: copies.
REPLAYS = "x-eventworker-replays"
#: On a classic queue, how often a worker stopped while holding this message (crash, kill,
#: lost connection): the count a quorum queue keeps itself as its delivery count.
REDELIVERIES = "x-eventworker-redeliveries"
#: Headers never copied into a retry or dead-letter copy: broker bookkeeping that would make
#: RabbitMQ drop the copy as a dead-letter cycle (x-death), fan it out to other queues
#: (CC/BCC, sender-selected distribution) or expire it (handled by not copying ``expiration``).
_NOT_COPIED = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "cc",
        "bcc",
    }
)
_OUR_PREFIX = "x-eventworker-"
#: The dead-letter reason of a message whose AMQP header could not be decoded: the worker
#: rejects it to its dead-letter queue as the broker holds it, and the ``dlq`` commands read
#: the decode error from its bytes.
UNDECODABLE = "undecodable"
JSON = "application/json"

#: The type of an event's data. Covariant: an ``Event[Sub]`` is an ``Event[Base]``, as its data
#: is read-only (the event is frozen), so a handler of ``Event[Base]`` may take ``model=Sub``.
T_co = TypeVar("T_co", covariant=True)


class AmqpMessage(Protocol):
    """What the envelope reads of a delivered message, read-only (aio-pika's IncomingMessage
    and the worker's own deliveries fit)."""

    @property
    def body(self) -> bytes: ...

    @property
    def routing_key(self) -> str | None: ...

    @property
    def exchange(self) -> str | None: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def type(self) -> str | None: ...

    @property
    def timestamp(self) -> datetime | None: ...

    @property
    def app_id(self) -> str | None: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def content_encoding(self) -> str | None: ...

    @property
    def redelivered(self) -> bool | None: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Event(Generic[T_co]):
    """One event as a handler sees it.

    ``data`` is the decoded JSON, or an instance of the handler's model. ``attempt`` is 1 on the
    first delivery and counts only attempts that failed (a redelivery after a crash or a
    shutdown does not consume one). ``type`` is the routing key the producer published with.
    """

    id: str
    type: str
    source: str | None
    time: datetime
    data: T_co
    headers: Mapping[str, Any]
    attempt: int
    correlation_id: str
    causation_id: str | None = None
    redelivered: bool = False


#: ``content_encoding`` values that say the body is as it is: a charset label (kombu's JSON
#: serializer always sends ``utf-8``) or no coding at all. Any other, a compression such as
#: ``gzip``, is refused: a body is never inflated.
PLAIN_ENCODINGS = frozenset({"utf-8", "utf8", "identity"})


def decode_body(
    body: bytes, content_type: str | None, content_encoding: str | None, *, max_body_bytes: int
) -> Any:
    """The JSON value carried by a body, checked strictly.

    Size is checked before any decoding. A missing content type counts as JSON, so plain AMQP
    producers work; anything but JSON in UTF-8 is refused (never pickle). A ``content_encoding``
    of ``utf-8``, ``utf8`` or ``identity`` is a charset label or no coding; any other (a
    compression) is refused, never inflated. orjson rejects NaN,
    Infinity, invalid UTF-8, lone surrogates and nesting deeper than 1024; duplicate keys keep
    the last value.

    Raises:
        EnvelopeError: with reason ``too_large``, ``unsupported_content_type`` or
            ``decode_error``.
    """
    if len(body) > max_body_bytes:
        raise EnvelopeError("too_large", f"body of {len(body)} bytes exceeds {max_body_bytes}")
    if content_type is not None:
        media, _, params = content_type.partition(";")
        charset = params.strip().lower().removeprefix("charset=").strip('"')
        if media.strip().lower() != JSON or charset not in ("", "utf-8", "utf8"):
            raise EnvelopeError("unsupported_content_type", f"content type {content_type[:100]!r}")
    if content_encoding and content_encoding.strip().lower() not in PLAIN_ENCODINGS:
        raise EnvelopeError(
            "unsupported_content_type", f"content encoding {content_encoding[:100]!r}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError("decode_error", str(exc)[:200]) from None


def derived_id(routing_key: str, body: bytes, timestamp: datetime | None) -> str:
    """An id for a message that came without ``message_id``: the same for every redelivery."""
    digest = hashlib.sha256(f"{routing_key}\0{timestamp}\0".encode() + body).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def last_death(headers: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(queue, reason)`` of the newest ``x-death`` entry (the broker puts it first): the
    queue the broker last dead-lettered the message from, and why. None without one."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return None
    queue, reason = _text(deaths[0].get("queue")), _text(deaths[0].get("reason"))
    return (queue, reason) if queue and reason else None


#: The binary digits of a delay in front of a routing key (at least 25, the fewest levels).
_DELAY_DIGITS = re.compile(r"(?:[01]\.){25,}")


def undelayed(routing_key: str, own: str | None) -> str:
    """The routing key without the delay digits a broker-held delay put in front of it: the
    event's own key is in its ``type`` property, and only that is taken off."""
    if own and routing_key.endswith("." + own):
        head = routing_key[: -len(own)]
        if _DELAY_DIGITS.fullmatch(head):
            return own
    return routing_key


def decode(
    message: AmqpMessage,
    data: Any,
    *,
    trusted: bool,
    max_attempts: int,
    moved: bool = False,
) -> Event[Any]:
    """The :class:`Event` of a delivered message whose body decoded to ``data``.

    ``trusted`` says the message came back from our own retry tiers (the delivery's exchange is
    the return exchange and its newest ``x-death`` says a retry queue expired it): only then are
    the attempt counter and the original routing key read from our headers. Anything else starts
    at attempt 1, so a forged attempt header cannot dead-letter a message early. ``moved``: the
    worker itself put it straight into a queue (its probation queue), so the delivery's routing
    key is that queue's name and the event's is in our header.
    """
    headers = message.headers or {}
    routing_key = undelayed(message.routing_key or "", message.type)
    if moved:
        routing_key = _text(headers.get(ROUTING_KEY)) or routing_key
    attempt = 1
    if trusted:
        routing_key = _text(headers.get(ROUTING_KEY)) or routing_key
        attempt = min(max(_int(headers.get(ATTEMPT), 1), 1), max_attempts)
    event_id = (
        _text(message.message_id)
        or _text(headers.get("ce-id"))
        or derived_id(routing_key, message.body, message.timestamp)
    )
    time = message.timestamp or _ce_time(headers.get("ce-time")) or datetime.now(UTC)
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return Event(
        id=event_id,
        type=routing_key,
        source=_text(message.app_id) or _text(headers.get("ce-source")),
        time=time,
        data=data,
        headers=MappingProxyType(dict(headers)),
        attempt=attempt,
        correlation_id=_text(message.correlation_id)
        or _text(headers.get("ce-correlationid"))
        or event_id,
        causation_id=_text(headers.get(CAUSATION_ID)) or _text(headers.get("ce-causationid")),
        redelivered=bool(message.redelivered),
    )


def _ce_time(value: Any) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def encode_data(data: Any) -> bytes:
    """JSON bytes of ``data``; ``InvalidInputError``-free: callers validate beforehand.

    Raises:
        TypeError: ``data`` holds a value JSON cannot express.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"event data is not JSON-serialisable: {exc}") from None


def properties(
    *,
    event_id: str,
    routing_key: str,
    source: str | None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    headers: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """Keyword arguments for an outgoing message's AMQP properties (persistent, JSON)."""
    all_headers = dict(headers or {})
    if causation_id:
        all_headers[CAUSATION_ID] = causation_id
    return {
        "message_id": event_id,
        "type": routing_key,
        "app_id": source,
        "correlation_id": correlation_id,
        "timestamp": timestamp or datetime.now(UTC),
        "content_type": JSON,
        "headers": all_headers,
    }


def carried_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The producer's headers a retry or dead-letter copy keeps: all but broker bookkeeping,
    sender-selected routing (CC/BCC) and our own (which the copy sets afresh), except the
    replay count, which stays with the message for good."""
    return {
        k: v
        for k, v in headers.items()
        if k.lower() not in _NOT_COPIED
        and (not k.lower().startswith(_OUR_PREFIX) or k.lower() == REPLAYS)
        and k.lower() != RETURN_TO
    }


def new_id() -> str:
    """A fresh event id."""
    return str(uuid.uuid4())


#: Header names a producer may not set by hand: they would re-route the message (CC/BCC),
#: confuse dead-lettering (x-death) or forge our own bookkeeping.
RESERVED_HEADERS = frozenset({"cc", "bcc", "x-death"})


def check_routing_key(key: str) -> None:
    """A routing key for publishing: non-empty, at most 255 bytes, no wildcards.

    ``*`` and ``#`` are literal characters when publishing; a key with them is almost always a
    binding pattern used by mistake.

    Raises:
        ValueError: naming the problem.
    """
    if not key:
        raise ValueError("the routing key is empty")
    check_utf8(key, "the routing key")
    if len(key.encode("utf-8")) > 255:
        raise ValueError("the routing key is longer than 255 bytes")
    if "*" in key or "#" in key:
        raise ValueError(
            f"the routing key {key!r} contains '*' or '#': those are binding "
            f"wildcards, literal when publishing"
        )


def check_utf8(value: str, what: str) -> None:
    """Raises ValueError, naming ``what``, when ``value`` cannot be sent as UTF-8: it holds a
    lone surrogate, which is how Python hands over command-line bytes that were not UTF-8."""
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError(f"{what} is not valid UTF-8")


def check_header(name: str) -> None:
    """Raises ValueError for a header name a producer must not set."""
    if not name or len(name.encode()) > 255:
        raise ValueError("a header name must be 1 to 255 bytes")
    if (
        name.lower() in RESERVED_HEADERS
        or name.lower().startswith(_OUR_PREFIX)
        or name.lower() == RETURN_TO
    ):
        raise ValueError(
            f"header {name!r} is reserved (it would re-route the message or forge "
            f"eventworker's bookkeeping)"
        )
