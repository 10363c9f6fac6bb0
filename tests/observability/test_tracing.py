"""W3C trace context across the queue: parsing, propagation to follow-up events through retries
and dead letters, with OpenTelemetry spans and without OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from eventworker import Context, Event, RetryPolicy, handler
from eventworker.observability import tracing
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 with more
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nforged",
        12345,
        None,
    ],
)
def test_invalid_traceparents_are_refused(value: Any) -> None:
    assert tracing.parse_traceparent(value) is None
    assert tracing.trace_headers({"traceparent": value}) == {}


def test_a_valid_traceparent_is_parsed_and_future_versions_are_accepted() -> None:
    assert tracing.parse_traceparent(TRACEPARENT) == (TRACE_ID, PARENT)
    assert tracing.parse_traceparent(TRACEPARENT.encode()) == (TRACE_ID, PARENT)
    future = f"01-{TRACE_ID}-{PARENT}-01-whatever"
    assert tracing.parse_traceparent(future) == (TRACE_ID, PARENT)


def test_tracestate_travels_only_with_a_valid_traceparent_and_within_its_limit() -> None:
    both = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "other": "x"}
    assert tracing.trace_headers(both) == {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    assert tracing.trace_headers({"tracestate": TRACESTATE}) == {}
    too_long = {"traceparent": TRACEPARENT, "tracestate": "a=" + "b" * 600}
    assert tracing.trace_headers(too_long) == {"traceparent": TRACEPARENT}
    control = {"traceparent": TRACEPARENT, "tracestate": "a=b\r\nforged: 1"}
    assert tracing.trace_headers(control) == {"traceparent": TRACEPARENT}
    assert tracing.trace_id(both) == TRACE_ID


def test_without_opentelemetry_installed_the_headers_are_still_carried() -> None:
    # A fresh interpreter where `import opentelemetry` fails, as on an install without the extra.
    script = f"""
import sys
sys.modules["opentelemetry"] = None
from eventworker.observability import tracing
assert not tracing.OTEL
received = {{"traceparent": "{TRACEPARENT}", "tracestate": "{TRACESTATE}"}}
with tracing.consuming(handler="h", queue="q", event_id="e", event_type="t", attempt=1,
                       headers=received) as span:
    assert span.trace_id == "{TRACE_ID}"
    with tracing.producing("out", received=received) as headers:
        assert headers == received, headers
    span.record(outcome="Ack", error=RuntimeError("x"))
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """An OpenTelemetry SDK recording every span eventworker makes in this test; the process's
    global provider stays untouched, so other tests see no spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER_PROVIDER", provider)
    return exporter


@pytest.fixture(params=["otel", "w3c-only"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "w3c-only":
        monkeypatch.setattr(tracing, "OTEL", False)
    return str(request.param)


async def test_a_traceparent_sent_in_goes_out_on_the_follow_up_event_and_survives_a_retry(
    broker: Broker, settings: Settings, spans: InMemorySpanExporter, mode: str
) -> None:
    attempts: list[Event[Any]] = []
    follow_ups: list[Event[Any]] = []

    @handler("trace.in", retry=RetryPolicy(max_attempts=3, delays=(0.1,)))
    async def first(event: Event[Any], ctx: Context) -> None:
        attempts.append(event)
        if event.attempt == 1:
            raise ConnectionError("downstream unavailable")
        await ctx.publish("trace.out", {"n": 1})

    @handler("trace.out")
    async def second(event: Event[Any], ctx: Context) -> None:
        follow_ups.append(event)

    async with running(broker, [first, second], settings):
        await broker.publish(
            "trace.in",
            b"{}",
            message_id="in-1",
            headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
        )
        await wait_for(lambda: len(follow_ups) == 1)
    # The retry came back with the producer's trace context untouched.
    assert [e.attempt for e in attempts] == [1, 2]
    assert attempts[1].headers["traceparent"] == TRACEPARENT
    assert attempts[1].headers["tracestate"] == TRACESTATE
    sent = follow_ups[0].headers
    assert tracing.trace_id(sent) == TRACE_ID
    assert sent["tracestate"] == TRACESTATE
    if mode == "w3c-only":
        assert sent["traceparent"] == TRACEPARENT
        assert spans.get_finished_spans() == ()
        return
    by_kind: dict[SpanKind, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        by_kind.setdefault(span.kind, []).append(span)
    consumers = sorted(by_kind[SpanKind.CONSUMER], key=lambda s: s.start_time or 0)
    [producer] = by_kind[SpanKind.PRODUCER]
    assert len(consumers) == 3  # attempt 1, attempt 2, the follow-up's handling
    for attempt in consumers[:2]:
        # Each attempt is a child of (and linked to) the producer's span, in its trace.
        assert attempt.parent is not None and f"{attempt.parent.span_id:016x}" == PARENT
        assert [f"{link.context.span_id:016x}" for link in attempt.links] == [PARENT]
        assert f"{attempt.context.trace_id:032x}" == TRACE_ID
    assert consumers[0].attributes is not None
    assert consumers[0].attributes["eventworker.outcome"] == "RetryIn"
    assert consumers[0].status.is_ok is False
    # The follow-up publish is a producer span under attempt 2; its context went out.
    assert producer.parent is not None
    assert producer.parent.span_id == consumers[1].context.span_id
    assert sent["traceparent"] == f"00-{TRACE_ID}-{producer.context.span_id:016x}-01"
    assert consumers[2].parent is not None
    assert consumers[2].parent.span_id == producer.context.span_id


async def test_a_dead_lettered_copy_keeps_the_trace_headers_for_replays(
    broker: Broker, settings: Settings
) -> None:
    @handler("trace.dead", retry=RetryPolicy(max_attempts=1, delays=(1,)))
    async def fails(event: Event[Any], ctx: Context) -> None:
        raise RuntimeError("always")

    async with running(broker, [fails], settings) as worker:
        await broker.publish(
            "trace.dead", b"{}", headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        )
        [dead_lettered] = await broker.take_all(worker.routes[0].dead_letter_queue, expect=1)
    assert dead_lettered.headers["traceparent"] == TRACEPARENT
    assert dead_lettered.headers["tracestate"] == TRACESTATE


async def test_ctx_publish_carries_the_trace_headers_unless_the_handler_sets_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime

    from tests.support.publishing import RecordingPublish

    monkeypatch.setattr(tracing, "OTEL", False)
    received = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "tenant": "acme"}
    event: Event[Any] = Event(
        "e-1", "a.b", None, datetime.now(UTC), {}, received, attempt=1, correlation_id="c"
    )
    publish = RecordingPublish()
    ctx = Context("h", event, publish)
    await ctx.publish("follow.up", {})
    own = f"00-{'1' * 32}-{'2' * 16}-01"
    await ctx.publish("follow.up", {}, headers={"traceparent": own, "x": "y"})
    await Context(
        "h", Event("e-2", "a.b", None, datetime.now(UTC), {}, {}, 1, "c"), publish
    ).publish("follow.up", {})
    first, second, third = (call["headers"] for call in publish.calls)
    assert first == {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    assert second == {"traceparent": own, "x": "y"}
    assert third is None  # nothing to carry: no headers at all, as before
