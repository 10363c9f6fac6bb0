"""The cost of a delayed event: held by the broker's delay levels, against an immediate one."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from benchmarks.harness import Bench, Case, Group, Metric, Sample
from benchmarks.procs import ChildFailed
from benchmarks.publishers import run_publisher
from benchmarks.wire import ROUTING_KEY
from eventworker.topology import declare, delays, layout

#: Levels declared for the scenario: the fewest eventworker allows.
LEVELS = 25

GROUP = Group(
    "delay",
    "Delay: persistent ~300-byte events held by the broker's delay levels, or not",
    (
        Metric("cpu_us_per_msg", "publisher CPU µs/msg", "lower"),
        Metric("msgs_per_s", "msgs/s end to end", "higher"),
    ),
    "Events per second from the first publish until the last one is in the destination "
    "queue, less the delay asked (so the figure is the broker's extra work, not the wait), and "
    "the publisher's CPU per event. A delay of 1 s waits in one level queue (a quorum queue: "
    "a replicated write, then a dead-lettering), 7 s (binary 111) in three; each is a hop an "
    "immediate event does not make. Baseline: raw aio-pika publishing the same events "
    "immediately, 256 confirms in flight.",
)


async def _topology(bench: Bench) -> tuple[str, str]:
    """An exchange with the delay levels, and a queue bound to it for immediate and delayed
    events, declared as a worker would (the levels tracked for clean-up)."""
    prefix = bench.broker.prefix("delay")
    exchange = f"{prefix}.x"
    handlers = [layout.handler_queues("sink", [ROUTING_KEY], prefix=f"{prefix}.")]
    plan = layout.plan(
        handlers,
        exchange=exchange,
        prefix=f"{prefix}.",
        queue_type="classic",
        delivery_limit=0,
        tiers=(),
        delay_levels=LEVELS,
    )
    bench.broker.track(
        queues=[q.name for q in plan.queues], exchanges=[e.name for e in plan.exchanges]
    )
    await declare.apply(plan, bench.broker.connection)
    return exchange, handlers[0].queue


async def _arrived(bench: Bench, queue: str, count: int, timeout: float) -> float:
    """The wall-clock time when ``queue`` first held ``count`` messages (polled every 20 ms).

    Raises:
        ChildFailed: not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while (held := (await bench.broker.depth(queue))[0]) < count:
        if time.monotonic() > deadline:
            raise ChildFailed(f"{held} of {count} events arrived in {queue}")
        await asyncio.sleep(0.02)
    return time.time()


async def _measure(bench: Bench, argv: list[str], delay: int) -> Sample:
    count = bench.profile.delayed
    exchange, queue = await _topology(bench)
    report = await run_publisher(
        bench, bench.scratch(), [*argv, f"--exchange={exchange}", f"--count={count}"]
    )
    if report["count"] < count:
        raise ChildFailed(f"published {report['count']:g} of {count}")
    landed = await _arrived(bench, queue, count, timeout=delay + 120)
    return {
        "msgs_per_s": count / max(landed - report["started"] - delay, 1e-3),
        "cpu_us_per_msg": report["cpu"] / count * 1e6,
    }


async def raw(bench: Bench) -> Sample:
    argv = [bench.python(), "-m", "benchmarks.clients.raw_publisher", "--window=256"]
    return await _measure(bench, argv, 0)


async def library(bench: Bench, delay: int) -> Sample:
    argv = [bench.python(), "-m", "benchmarks.clients.library_publisher"]
    return await _measure(bench, [*argv, f"--delay={delay}", f"--levels={LEVELS}"], delay)


def hops(delay: int) -> int:
    """Level queues an event with ``delay`` waits in."""
    return len(delays.levels_entered(delay, LEVELS)) if delay else 0


def cases() -> list[Case]:
    case = GROUP.case
    return [
        case("raw-immediate", "raw aio-pika, immediate", raw, baseline=True),
        case(
            "eventworker-immediate", "eventworker Publisher, immediate", partial(library, delay=0)
        ),
        *(
            case(
                f"eventworker-{d}s",
                f"eventworker Publisher, delay={d} ({hops(d)} level queue(s))",
                partial(library, delay=d),
            )
            for d in (1, 7)
        ),
    ]
