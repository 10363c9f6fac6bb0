"""The benchmark's eventworker plugin: handlers that do nothing but count (``probe.hit``).

The harness makes it an installed plugin for ``eventworker run`` without pip (see
``worker_process``), then selects handlers with ``EVENTWORKER_HANDLERS``.
"""

from __future__ import annotations

from typing import Any

from benchmarks import probe
from benchmarks.wire import ROUTING_KEY, SENT_HEADER
from eventworker import Context, Event, RetryPolicy, handler

#: The one retry delay of ``bench_retry_once``: short, so the scenario measures CPU, not waiting.
RETRY_DELAY = 0.2
#: How many handlers ``bench_fleet*`` defines (start-up and topology with many handlers).
FLEET = 200


@handler(ROUTING_KEY, name="bench_noop")
async def noop(event: Event[Any], ctx: Context) -> None:
    probe.hit()


@handler(ROUTING_KEY, name="bench_latency")
async def latency(event: Event[Any], ctx: Context) -> None:
    probe.hit(event.headers[SENT_HEADER])


@handler(
    ROUTING_KEY, name="bench_retry_once", retry=RetryPolicy(max_attempts=2, delays=(RETRY_DELAY,))
)
async def retry_once(event: Event[Any], ctx: Context) -> None:
    """Fails the first attempt, succeeds on the retry: the cost of one broker-held retry."""
    if event.attempt == 1:
        probe.start()
        raise RuntimeError("fails once by design")
    probe.hit()


async def _member(event: Event[Any], ctx: Context) -> None:
    probe.hit()


def fleet_name(n: int) -> str:
    return f"bench_fleet{n:03d}"


for _n in range(FLEET):
    globals()[fleet_name(_n)] = handler(f"bench.fleet.{_n}", name=fleet_name(_n))(_member)


# The handlers with features on (the features and waiting groups) live in their own module.
from benchmarks.plugin_features import (  # noqa: E402
    model,
    model_idempotent,
    model_logged,
    wait,
)

__all__ = ["latency", "model", "model_idempotent", "model_logged", "noop", "retry_once", "wait"]
