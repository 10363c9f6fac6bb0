"""The cost of a retried message: a handler that fails once, retried through the broker."""

from __future__ import annotations

from functools import partial

from benchmarks.consumers import Worker
from benchmarks.consumption import drain
from benchmarks.harness import Case, Group, Metric

GROUP = Group(
    "retry",
    "Retry: a handler that fails once, then succeeds (retry delay 0.2 s)",
    (
        Metric("cpu_us_per_msg", "consumer CPU µs/msg", "lower"),
        Metric("msgs_per_s", "msgs/s", "higher", ratio=False),
    ),
    "CPU per message of a worker whose handler fails every first attempt: the failure is "
    "logged, a copy is published to the retry queue with a confirm, the original acked; the "
    "copy comes back through the return exchange and succeeds. The extra CPU per retried "
    "message is this minus the no-op baseline of the same repetition. msgs/s includes the "
    "0.2 s wait in the broker.",
)


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case(
            "eventworker-noop",
            "eventworker run, no-op handler, classic queue",
            partial(drain, consumer=Worker(), backlog="retry"),
            baseline=True,
        ),
        case(
            "eventworker-retry-once",
            "eventworker run, fails once then succeeds, classic queue",
            partial(drain, consumer=Worker(("bench_retry_once",)), backlog="retry"),
        ),
    ]
