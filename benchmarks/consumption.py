"""The two ways a consumer is measured: draining a pre-published backlog, and latency at a
fixed publish rate. Consumers report through the probe; CPU and memory come from /proc."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks import probe, procs
from benchmarks.consumers import Consumer, Target
from benchmarks.harness import Bench, Sample
from benchmarks.procs import Child, ChildFailed
from benchmarks.stats import percentile

#: Seconds a consumer may take to start consuming.
START_TIMEOUT = 60.0
#: Seconds a start-up measurement may take (200 handlers declare 400 queues).
SLOW_START_TIMEOUT = 300.0
#: Seconds between a consumer's ready line and the first paced publish: what it still does
#: right after start-up (logging, first tasks) is not the latency of a message.
SETTLE = 0.5
#: The slowest drain rate (messages/s) before a measurement is abandoned as stuck.
SLOWEST = 200.0


async def drain(
    bench: Bench, consumer: Consumer, backlog: str = "drain", *, count: int | None = None
) -> Sample:
    """Pre-publish a backlog (``backlog`` names the profile's count: ``drain``,
    ``backlog_large``...; or ``count`` messages), start the consumer, measure until each
    message was handled.

    Figures: messages/s from the first handled message to the last (start-up excluded); CPU
    µs/message of the consuming processes over the same span; peak RSS of all its processes.

    Raises:
        ChildFailed: a consumer died or stalled, or messages were left unacked.
    """
    if count is None:
        count = int(getattr(bench.profile, backlog))
    scratch = bench.scratch()
    target = await consumer.prepare(bench, scratch, count)
    probe_dir = scratch / "probe"
    probe_dir.mkdir()
    children = consumer.start(bench, scratch, target, probe_dir)
    try:
        readings = await _until_counted(children, probe_dir, count)
        # Read while the processes live: their CPU so far, their peak memory so far.
        cpu = sum(procs.cpu_seconds(r.pid) - r.cpu_at_first for r in readings)
        rss = sum(procs.group_peak_rss(child.pid) for child in children)
    finally:
        codes = [await child.stop() for child in children]
    await _check_settled(bench, consumer, target, children, codes)
    seconds = max(r.last for r in readings) - min(r.first for r in readings)
    return {
        "msgs_per_s": count / seconds,
        "cpu_us_per_msg": cpu / count * 1e6,
        "peak_rss_mb": rss / 2**20,
    }


async def latency(bench: Bench, consumer: Consumer) -> Sample:
    """Publish at ``profile.latency_rate`` to a running consumer; the time from each publish to
    its handler call, p50 and p99 (the first tenth, at most 100 messages, is warm-up)."""
    rate = bench.profile.latency_rate
    count = int(rate * bench.profile.latency_seconds)
    scratch = bench.scratch()
    target = await consumer.prepare(bench, scratch, 0)
    probe_dir = scratch / "probe"
    probe_dir.mkdir()
    children = consumer.start(bench, scratch, target, probe_dir)
    try:
        await asyncio.gather(*(c.wait_for_line(consumer.ready, START_TIMEOUT) for c in children))
        await asyncio.sleep(SETTLE)
        await bench.broker.paced_publish(target.exchange, count, rate)
        await _until_counted(children, probe_dir, count)
    finally:
        codes = [await child.stop() for child in children]
    await _check_settled(bench, consumer, target, children, codes)
    samples = [s for r in probe.read(probe_dir, latencies=True) for s in r.latencies]
    samples = samples[min(100, count // 10) :]
    return {
        "p50_ms": percentile(samples, 50) * 1e3,
        "p99_ms": percentile(samples, 99) * 1e3,
        "max_ms": max(samples) * 1e3,
    }


async def start_up(bench: Bench, consumer: Consumer) -> Sample:
    """Seconds from starting the consumer's process to its ready line (consuming)."""
    scratch = bench.scratch()
    target = await consumer.prepare(bench, scratch, 0)
    children = consumer.start(bench, scratch, target, scratch)
    try:
        seen = await children[0].wait_for_line(consumer.ready, SLOW_START_TIMEOUT)
    finally:
        for child in children:
            await child.stop()
    return {"seconds": seen - children[0].started}


async def _until_counted(children: list[Child], probe_dir: Path, count: int) -> list[probe.Reading]:
    deadline = time.monotonic() + START_TIMEOUT + count / SLOWEST
    while True:
        readings = probe.read(probe_dir)
        if probe.total(readings) >= count:
            return readings
        for child in children:
            if not child.running():
                raise child.failure(f"exited after {probe.total(readings)} of {count} messages")
        if time.monotonic() > deadline:
            raise children[0].failure(f"handled only {probe.total(readings)} of {count} in time")
        await asyncio.sleep(0.01)


async def _check_settled(
    bench: Bench, consumer: Consumer, target: Target, children: list[Child], codes: list[int]
) -> None:
    """Every message handled must be acked: after the consumer stopped, nothing is left."""
    for child, code in zip(children, codes, strict=True):
        if consumer.clean_exit and code != 0:
            raise child.failure(f"exited {code} on SIGTERM")
    left, _ = await bench.broker.depth(target.queue)
    if left:
        raise ChildFailed(f"{left} message(s) left in {target.queue} after the consumer stopped")
