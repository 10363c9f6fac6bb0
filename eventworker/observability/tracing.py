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

import importlib.metadata
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any


def _installed() -> bool:
    """Whether the optional extra ``eventworker[otel]`` is there, without importing it."""
    if "opentelemetry" in sys.modules:  # imported already, or blocked (None)
        return sys.modules["opentelemetry"] is not None
    try:
        importlib.metadata.distribution("opentelemetry-api")
    except importlib.metadata.PackageNotFoundError:  # absent extra: the W3C-only path
        return False
    return True


#: True when OpenTelemetry is installed, so spans can be made; tests switch it off to prove
#: the fallback.
OTEL = _installed()
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

    def __enter__(self) -> Handling:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def record(self, *, outcome: str, error: BaseException | None) -> None:
        """Note how the handling ended (``Ack``, ``RetryIn``, ``DeadLetter``) on the span.

        A handler error marks the span as failed; the exception's message is not recorded,
        only its type, because it may quote the event's body.
        """
        if self._span is None:  # no span: nothing to record (and no look-up per message)
            return
        otel = _otel()
        if otel is None:
            return
        trace = otel[0]
        self._span.set_attribute("eventworker.outcome", outcome)
        if error is not None:
            self._span.set_attribute("error.type", type(error).__name__)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))


def _otel() -> tuple[Any, Any] | None:
    """OpenTelemetry's ``trace`` and ``propagate`` modules, imported on first need, or None
    when nothing can make them matter: the extra is absent, or no code has imported
    OpenTelemetry and no tracer provider is named (``TRACER_PROVIDER``, the
    ``OTEL_PYTHON_TRACER_PROVIDER`` variable). A tracer provider, a propagator or a current
    span can only be set by code that imported it, so without one the spans would be no-ops
    and the propagated headers those of the received event: the W3C-only path gives the same
    headers, and a worker without tracing never loads OpenTelemetry."""
    if not OTEL:
        return None
    if (
        TRACER_PROVIDER is None
        and "opentelemetry.trace" not in sys.modules
        and not os.environ.get("OTEL_PYTHON_TRACER_PROVIDER")
    ):
        return None
    try:
        from opentelemetry import propagate, trace
    except ImportError:  # pragma: no cover - a broken install: the W3C-only path
        return None
    return trace, propagate


def _carrier(headers: Mapping[str, Any]) -> dict[str, str]:
    """Text headers only: what an OpenTelemetry propagator may read."""
    return {k: v for k, v in ((k, _text(v)) for k, v in headers.items()) if v is not None}


def _tracing(trace: Any) -> bool:
    """Whether any tracer provider is configured. Without one, OpenTelemetry's spans are
    no-ops that still cost about a tenth of a no-op handling's CPU: skip them. Follow-up events
    then carry the received trace headers as without the extra (``producing`` falls back)."""
    return TRACER_PROVIDER is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def consuming(
    *, handler: str, queue: str, event_id: str, event_type: str, attempt: int, headers: Any
) -> AbstractContextManager[Handling]:
    """The span of one handling; its OpenTelemetry context is current inside the block, so
    follow-up publishes (and a plugin's own spans) become its children. Without a tracer
    provider, the handling's trace id alone, as a context manager of its own: a generator's
    context manager per message costs about as much as the rest of the tracing path."""
    otel = _otel()
    if otel is None or not _tracing(otel[0]):
        return Handling(trace_id(headers))
    return _span(otel, handler, queue, event_id, event_type, attempt, headers)


@contextmanager
def _span(
    otel: tuple[Any, Any],
    handler: str,
    queue: str,
    event_id: str,
    event_type: str,
    attempt: int,
    headers: Any,
) -> Iterator[Handling]:
    trace, propagate = otel
    producer = propagate.extract(_carrier(headers))
    producer_span = trace.get_current_span(producer).get_span_context()
    links = [trace.Link(producer_span)] if producer_span.is_valid else []
    tracer = trace.get_tracer("eventworker", tracer_provider=TRACER_PROVIDER)
    with tracer.start_as_current_span(
        f"process {queue}",
        context=producer,
        kind=trace.SpanKind.CONSUMER,
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
        found = trace.format_trace_id(context.trace_id) if context.is_valid else None
        yield Handling(found or trace_id(headers), span)


@contextmanager
def producing(routing_key: str, *, received: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """The trace headers for a follow-up event of the event whose headers are ``received``.

    With OpenTelemetry: a PRODUCER span around the publish, its context injected. Without: the
    received event's valid ``traceparent``/``tracestate``, carried unchanged.
    """
    otel = _otel()
    if otel is None:
        yield trace_headers(received)
        return
    trace, propagate = otel
    tracer = trace.get_tracer("eventworker", tracer_provider=TRACER_PROVIDER)
    with tracer.start_as_current_span(
        f"send {routing_key}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.rabbitmq.destination.routing_key": routing_key,
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        # No recording tracer and no trace in the context: carry what came in, if anything.
        yield carrier if TRACEPARENT in carrier else {**trace_headers(received), **carrier}
