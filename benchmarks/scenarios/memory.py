"""Worker memory with a small and a large backlog: prefetch should bound it, not the backlog."""

from __future__ import annotations

from functools import partial

from benchmarks.consumers import Raw, Worker
from benchmarks.consumption import drain
from benchmarks.harness import Case, Group, Metric

GROUP = Group(
    "memory",
    "Memory: peak RSS draining a small and a large backlog",
    (
        Metric("peak_rss_mb", "peak RSS MB", "lower"),
        Metric("msgs_per_s", "msgs/s", "higher", ratio=False),
    ),
    "The consumer's peak resident memory after draining the whole backlog; with prefetch 128 "
    "the broker never sends more than 128 ahead, so a 100x larger backlog should not show. "
    "Baseline: raw aio-pika, queue.consume(callback), ack each, small backlog.",
)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "raw-small",
            "raw aio-pika, await ack(), small backlog",
            partial(drain, consumer=Raw("consume"), backlog="backlog_small"),
            baseline=True,
        ),
        case(
            "raw-large",
            "raw aio-pika, await ack(), large backlog",
            partial(drain, consumer=Raw("consume"), backlog="backlog_large"),
        ),
        case(
            "eventworker-small",
            "eventworker run, classic queue, small backlog",
            partial(drain, consumer=Worker(), backlog="backlog_small"),
        ),
        case(
            "eventworker-large",
            "eventworker run, classic queue, large backlog",
            partial(drain, consumer=Worker(), backlog="backlog_large"),
        ),
    ]
