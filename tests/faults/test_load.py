"""A: load (reliability guide §7 A1): a large backlog is drained with nothing lost, nothing
redelivered, and worker memory bounded by the prefetch, not by the backlog."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field

import pytest

from tests.faults.plugin import Spec
from tests.faults.processes import WorkerProcess
from tests.faults.rig import Rig

MIB = 1024


@dataclass(slots=True)
class Samples:
    """RSS (KiB) and the work queue's unacked count, sampled about once a second."""

    rss: list[int] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)


async def sample(rig: Rig, worker: WorkerProcess, queue: str, into: Samples) -> None:
    while worker.alive():
        with contextlib.suppress(OSError, AssertionError):
            into.rss.append(worker.memory_kib("VmRSS"))
        state = await asyncio.to_thread(rig.queues)
        if queue in state:
            into.unacked.append(state[queue].unacked)
        await asyncio.sleep(1)


async def drain_while_sampling(
    rig: Rig, worker: WorkerProcess, ids: list[str], queue: str, *, timeout: float
) -> tuple[Samples, float]:
    """Samples taken until ``ids`` are processed, and the rate they were processed at."""
    samples = Samples()
    sampler = asyncio.create_task(sample(rig, worker, queue, samples))
    started, before = time.monotonic(), rig.ledger.count_processed()
    try:
        await rig.wait_processed(ids, timeout=timeout)
    finally:
        sampler.cancel()
    rate = (rig.ledger.count_processed() - before) / (time.monotonic() - started)
    return samples, rate


@pytest.mark.parametrize(
    ("backlog", "more"),
    [
        pytest.param(5_000, 2_000, id="5k"),
        pytest.param(100_000, 100_000, id="100k", marks=pytest.mark.slow),
    ],
)
async def test_a1_a_large_backlog_drains_in_memory_bounded_by_the_prefetch(
    shared_rig: Rig, backlog: int, more: int
) -> None:
    rig = shared_rig
    spec = Spec("a1", ("a1.event",))
    queue = rig.work_queue("a1")
    await rig.declare([spec])
    worker = rig.worker([spec])

    # Confirms of 1,024 publishes in flight to a quorum queue can take longer than the
    # settings' 5 s on a busy machine.
    publish = functools.partial(rig.publish, window=1024, timeout=60)
    small = await publish("a1.event", [{"n": i} for i in range(1000)])
    worker.start()
    await asyncio.to_thread(worker.wait_started)
    with_small, _ = await drain_while_sampling(rig, worker, small, queue, timeout=120)
    assert worker.stop() == 0

    big = await publish("a1.event", [{"n": i} for i in range(backlog)])
    worker.start()
    await asyncio.to_thread(worker.wait_started)
    with_big, rate = await drain_while_sampling(rig, worker, big, queue, timeout=backlog / 50)

    at_start = worker.memory_kib("VmRSS")
    publishing = asyncio.create_task(publish("a1.event", [{"n": i} for i in range(more)]))
    phase_2 = Samples()
    sampler = asyncio.create_task(sample(rig, worker, queue, phase_2))
    try:
        await rig.wait_processed(await publishing, timeout=more / 50)
    finally:
        sampler.cancel()
    at_end = worker.memory_kib("VmRSS")
    report = await rig.finish(workers=[worker], expected_starts=2)

    total = 1000 + backlog + more
    print(
        f"drained {backlog} at {rate:.0f} msg/s; RSS peak {max(with_small.rss)} KiB with "
        f"1k, {max(with_big.rss)} KiB with {backlog}; phase 2 {at_start} -> {at_end} KiB"
    )
    assert len(rig.ledger.confirmed()) == total and not rig.ledger.unknown()
    assert report.dup == 0, "nothing failed, so nothing may run twice"
    assert not [c for c in rig.ledger.invocations() if c.redelivered]
    limit = rig.settings.prefetch  # one handler, one consumer
    assert max(with_small.unacked + with_big.unacked + phase_2.unacked) <= limit
    assert max(with_big.rss) <= max(with_small.rss) + 30 * MIB, "memory grows with the backlog"
    assert at_end < at_start * 1.10, f"RSS drifted from {at_start} to {at_end} KiB"
    assert rate >= 100, f"{rate:.0f} msg/s: a pathology, even on a loaded machine"
