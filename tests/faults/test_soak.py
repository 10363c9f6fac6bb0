"""A2: a chaos soak. For a stated time (30 minutes; ``EVENTWORKER_TEST_SOAK_SECONDS`` to
change it) a producer publishes a steady stream of events — some failing twice before they
succeed, some failing for good — to two workers on the private node, while at random moments
the test SIGKILLs a worker (restarted at once, as systemd would), closes the workers'
connections, or restarts the broker's application. Afterwards every invariant of the suite
holds, and the figures are printed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from tests.faults import traffic
from tests.faults.invariants import inv_alive
from tests.faults.plugin import Spec
from tests.faults.processes import supervise
from tests.faults.rig import Rig
from tests.support.private_node import PrivateNode

SOAK_SECONDS = float(os.environ.get("EVENTWORKER_TEST_SOAK_SECONDS", "1800"))
#: Seconds between two faults, drawn uniformly.
FAULT_EVERY = (10.0, 40.0)


def _bodies(start: int, n: int) -> list[dict[str, object]]:
    """Mostly quick successes; every 20th fails twice, every 97th fails for good."""
    return [
        {
            "n": i,
            "sleep": 0.002,
            "fail_attempts": 2 if i % 20 == 0 else 0,
            "permanent": i % 97 == 0,
        }
        for i in range(start, start + n)
    ]


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 900)
async def test_a2_a_chaos_soak_loses_nothing_and_reports_its_figures(
    node_rig: Rig, node: PrivateNode
) -> None:
    rig = node_rig
    spec = Spec("a2", ("a2.event",), max_attempts=3, delays=(0.5,))
    await rig.declare([spec])
    workers = [rig.started([spec]) for _ in range(2)]
    stop = asyncio.Event()
    supervisors = [supervise(w, stop, max_starts=100_000) for w in workers]
    rng = random.Random(2)
    deadline = time.monotonic() + SOAK_SECONDS
    faults = {"worker killed": 0, "connections closed": 0, "broker restarted": 0}

    async def produce() -> int:
        sent = 0
        while time.monotonic() < deadline:
            bodies = _bodies(sent, 200)
            ids = traffic.new_ids(len(bodies), "a2")
            events = traffic.outgoing("a2.event", bodies, ids)
            await traffic.publish_through_faults(rig.url, rig.settings.exchange, rig.ledger, events)
            sent += len(bodies)
            await asyncio.sleep(0.2)
        return sent

    async def chaos() -> None:
        while True:
            pause = rng.uniform(*FAULT_EVERY)
            if time.monotonic() + pause > deadline:
                return
            await asyncio.sleep(pause)
            fault = rng.choice(list(faults))
            if fault == "worker killed":
                victim = rng.choice([w for w in workers if w.alive()] or workers)
                if victim.alive():
                    victim.signal(signal.SIGKILL)
            elif fault == "connections closed":
                await asyncio.to_thread(
                    rig.ctl.close_connections, "eventworker worker [a2]", "fault injected"
                )
            else:
                await asyncio.to_thread(node.stop_app)
                await asyncio.sleep(rng.uniform(1, 5))
                await asyncio.to_thread(node.start_app)
            faults[fault] += 1

    started = time.monotonic()
    sent, _ = await asyncio.gather(produce(), chaos())
    await rig.reconnect()  # the test's own connection, after the broker restarts
    for worker in workers:  # the last kill's restart, before the supervisors stop
        await rig.wait(worker.alive, timeout=30, what="the worker restarted")
    stop.set()
    starts = [await s for s in supervisors]
    # Every invariant (ALIVE per worker below); a kill between a dead-letter copy's confirm and
    # its original's ack dead-letters that id twice: at-least-once.
    report = await rig.finish(drain_timeout=300, duplicate_dead_letters=True)
    for worker, n in zip(workers, starts, strict=True):
        inv_alive(worker.all_logs(), pids=worker.pids, expected_starts=n)
    took = time.monotonic() - started
    confirmed = len(rig.ledger.confirmed())
    print(
        f"A2 soak: {took:.0f}s, {sent} events sent, {confirmed} confirmed, "
        f"{len(rig.ledger.unknown())} of unknown outcome, {len(rig.ledger.processed())} "
        f"processed, {len(rig.ledger.dead_lettered_ids())} dead-lettered "
        f"({len(rig.ledger.dead_lettered_rows())} dead-letter copies); {report}; faults "
        + ", ".join(f"{k} {v}" for k, v in faults.items())
        + f"; worker starts {starts}"
    )
    assert sum(faults.values()) >= SOAK_SECONDS / FAULT_EVERY[1] - 1, faults
    assert confirmed > 0
