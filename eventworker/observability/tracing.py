"""W3C trace context across the queue: ``traceparent``/``tracestate`` from an event to the events
its handler publishes, and OpenTelemetry spans when the optional extra is installed.

Without OpenTelemetry the headers of the received event are carried to follow-up events as they
came (validated, never invented). With it, each handling is a CONSUMER span, child of and linked
to the producer's span, and each follow-up publish is a PRODUCER span whose context goes out in
the headers; the globally configured propagator and tracer provider are used, so an application
that configures none gets pass-through propagation and no spans. Retry and dead-letter copies
keep the producer's headers byte for byte (``envelope.carried_headers``), so retries and replays
stay in the producer's trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

try:  # the optional extra ``eventworker[otel]``
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the suite runs with the extra; see test_tracing
    _propagate = None  # type: ignore[assignment]  # absent extra: the W3C-only path
    _trace = None  # type: ignore[assignment]  # absent extra: the W3C-only path

#: True when OpenTelemetry spans are made; tests switch it off to prove the fallback.
OTEL = _trace is not None
#: The tracer provider of eventworker's spans; None is OpenTelemetry's global one (tests set a
#: provider of their own rather than the process-wide one, which can be set only once).
TRACER_PROVIDER: Any = None

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The W3C limit every participant must carry at least; longer tracestate values are dropped.
MAX_TRACESTATE = 512
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def parse_traceparent(value: Any) -> tuple[str, str] | None:
    """``(trace id, parent span id)`` of a valid W3C ``traceparent``, else None.

    Refused: version ``ff``, version 00 with trailing data, all-zero ids, upper-case hex, and
    anything that is not text. Headers come from producers, so nothing is trusted unchecked.
    """
    text = _text(value)
    match = _TRACEPARENT.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    return None if set(span_id) == {"0"} else (trace_id, span_id)


def trace_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The valid ``traceparent`` (and its ``tracestate``) of ``headers``, ready to send on."""
    parent = _text(headers.get(TRACEPARENT))
    if parent is None or parse_traceparent(parent) is None:
        return {}
    found = {TRACEPARENT: parent.strip()}
    state = _text(headers.get(TRACESTATE))
    if state and len(state) <= MAX_TRACESTATE and _PRINTABLE.fullmatch(state):
        found[TRACESTATE] = state
    return found


def trace_id(headers: Mapping[str, Any]) -> str | None:
    """The trace id of ``headers``' valid ``traceparent``, for log lines."""
    parsed = parse_traceparent(headers.get(TRACEPARENT))
    return parsed[0] if parsed else None


@dataclass(slots=True)
class Handling:
    """One handling as the tracer sees it: its trace id (for logs) and its span, if any."""

    trace_id: str | None
    _span: Any = field(default=None, repr=False)

    def record(self, *, outcome: str, error: BaseException | None) -> None:
        """Note how the handling ended (``Ack``, ``RetryIn``, ``DeadLetter``) on the span.

        A handler error marks the span as failed; the exception's message is not recorded,
        only its type, because it may quote the event's body.
        """
        if self._span is None or _trace is None:
            return
        self._span.set_attribute("eventworker.outcome", outcome)
        if error is not None:
            self._span.set_attribute("error.type", type(error).__name__)
            self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(error).__name__))


def _carrier(headers: Mapping[str, Any]) -> dict[str, str]:
    """Text headers only: what an OpenTelemetry propagator may read."""
    return {k: v for k, v in ((k, _text(v)) for k, v in headers.items()) if v is not None}


def _tracing() -> bool:
    """Whether any tracer provider is configured. Without one, OpenTelemetry's spans are
    no-ops that still cost about a tenth of a no-op handling's CPU: skip them. Follow-up events
    then carry the received trace headers as without the extra (``producing`` falls back)."""
    return TRACER_PROVIDER is not None or not isinstance(
        _trace.get_tracer_provider(), _trace.ProxyTracerProvider
    )


@contextmanager
def consuming(
    *, handler: str, queue: str, event_id: str, event_type: str, attempt: int, headers: Any
) -> Iterator[Handling]:
    """The span of one handling; its OpenTelemetry context is current inside the block, so
    follow-up publishes (and a plugin's own spans) become its children."""
    if not OTEL or _trace is None or _propagate is None or not _tracing():
        yield Handling(trace_id(headers))
        return
    producer = _propagate.extract(_carrier(headers))
    producer_span = _trace.get_current_span(producer).get_span_context()
    links = [_trace.Link(producer_span)] if producer_span.is_valid else []
    tracer = _trace.get_tracer("eventworker", tracer_provider=TRACER_PROVIDER)
    with tracer.start_as_current_span(
        f"process {queue}",
        context=producer,
        kind=_trace.SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.rabbitmq.destination.routing_key": event_type,
            "messaging.message.id": event_id,
            "eventworker.handler": handler,
            "eventworker.attempt": attempt,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        context = span.get_span_context()
        found = _trace.format_trace_id(context.trace_id) if context.is_valid else None
        yield Handling(found or trace_id(headers), span)


@contextmanager
def producing(routing_key: str, *, received: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """The trace headers for a follow-up event of the event whose headers are ``received``.

    With OpenTelemetry: a PRODUCER span around the publish, its context injected. Without: the
    received event's valid ``traceparent``/``tracestate``, carried unchanged.
    """
    if not OTEL or _trace is None or _propagate is None:
        yield trace_headers(received)
        return
    tracer = _trace.get_tracer("eventworker", tracer_provider=TRACER_PROVIDER)
    with tracer.start_as_current_span(
        f"send {routing_key}",
        kind=_trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.rabbitmq.destination.routing_key": routing_key,
        },
    ):
        carrier: dict[str, str] = {}
        _propagate.inject(carrier)
        # No recording tracer and no trace in the context: carry what came in, if anything.
        yield carrier if TRACEPARENT in carrier else {**trace_headers(received), **carrier}
