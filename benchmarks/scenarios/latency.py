"""End-to-end latency at a fixed, moderate publish rate: publish to handler call."""

from __future__ import annotations

from functools import partial

from benchmarks.consumers import Raw, Worker
from benchmarks.consumption import latency
from benchmarks.harness import Case, Group, Metric

GROUP = Group(
    "latency",
    "Latency: publish to handler call at a fixed rate (500 msg/s)",
    (
        Metric("p50_ms", "p50 ms", "lower"),
        Metric("p99_ms", "p99 ms", "lower"),
        Metric("max_ms", "max ms", "lower", ratio=False),
    ),
    "The harness publishes on a fixed schedule, each message stamped with its send time "
    "(CLOCK_MONOTONIC, one clock for all processes); the handler records the difference. "
    "Baseline: raw aio-pika, queue.consume(callback), ack each.",
)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "raw",
            "raw aio-pika, queue.consume(callback), await ack()",
            partial(latency, consumer=Raw("consume", latency=True)),
            baseline=True,
        ),
        case(
            "eventworker",
            "eventworker run, classic queue",
            partial(latency, consumer=Worker(("bench_latency",))),
        ),
        case(
            "eventworker-quorum",
            "eventworker run, quorum queue",
            partial(latency, consumer=Worker(("bench_latency",), queue_type="quorum")),
        ),
    ]
