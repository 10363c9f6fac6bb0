"""C: worker process faults — SIGKILL, SIGTERM drains, grace expiry, crash loops (§7 C1-C4)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Mapping

import pytest

from eventworker.errors import ExitCode
from tests.faults.plugin import Spec
from tests.faults.processes import WorkerProcess, supervise
from tests.faults.rig import LOAD_SLACK, Rig
from tests.support.control import QueueState


async def restart(worker: WorkerProcess, **options: float) -> None:
    worker.start(**options)
    await asyncio.to_thread(worker.wait_started)


@pytest.mark.parametrize(
    ("n", "sleeps", "kills"),
    [
        pytest.param(300, (0.1, 0.5), 4, id="300x4"),
        pytest.param(5000, (0.5, 2.0), 10, id="5000x10", marks=pytest.mark.slow),
    ],
)
async def test_c1_sigkill_mid_handler_loses_nothing_and_dead_letters_nothing(
    shared_rig: Rig, n: int, sleeps: tuple[float, float], kills: int
) -> None:
    rig = shared_rig
    spec = Spec("c1", ("c1.event",))
    rng = random.Random(11)
    await rig.declare([spec])
    ids = await rig.publish("c1.event", [{"n": i, "sleep": rng.uniform(*sleeps)} for i in range(n)])
    worker = rig.worker([spec])
    await restart(worker)
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        worker.kill()
        await asyncio.sleep(1)
        await restart(worker)
    await rig.wait_processed(ids, timeout=60 + n * sum(sleeps) / 2 / 16)
    report = await rig.finish(workers=[worker], expected_starts=kills + 1)

    assert rig.ledger.dead_lettered_ids() == set(), "a kill is not a handler failure"
    calls = rig.ledger.invocations()
    for i, call in enumerate(calls):
        if call.finished is None:
            later = [c for c in calls[i + 1 :] if c.id == call.id]
            assert any(c.redelivered for c in later), f"{call.id} was not redelivered"
    assert report.dup <= kills * rig.settings.prefetch


@pytest.fixture
def preloaded_sleepers() -> list[dict[str, float]]:
    rng = random.Random(22)
    return [{"n": i, "sleep": rng.uniform(0, 3)} for i in range(500)]


async def test_c2_sigterm_cancels_consumers_first_and_drains_running_handlers(
    shared_rig: Rig, preloaded_sleepers: list[dict[str, float]]
) -> None:
    rig = shared_rig.with_settings(grace=10.0)
    spec = Spec("c2", ("c2.event",))
    queue = rig.work_queue("c2")
    await rig.declare([spec])
    ids = await rig.publish("c2.event", preloaded_sleepers)
    worker = rig.worker([spec])
    await restart(worker)
    concurrency = rig.settings.concurrency
    await rig.wait(lambda: rig.ledger.count_invocations() >= concurrency, what="all slots busy")
    t0 = time.time()
    worker.signal(signal.SIGTERM)
    await asyncio.sleep(1.0)
    consumers = await asyncio.to_thread(rig.ctl.consumers, queue)
    code = await asyncio.to_thread(worker.wait, 10 + LOAD_SLACK)
    exited = time.time() - t0

    assert consumers == {}, "the consumer was not cancelled within 1 s of SIGTERM"
    assert code == ExitCode.OK and exited <= 10, f"exit {code} after {exited:.1f}s"
    calls = rig.ledger.invocations()
    late = [c for c in calls if c.started > t0 + 0.1]
    assert not late, f"{len(late)} handlers started after SIGTERM"
    assert all(c.outcome == "ok" and c.finished for c in calls), "an unfinished handler"
    completed = rig.ledger.processed()
    assert {c.id for c in calls} == completed
    state = await handed_back(rig, queue, len(ids) - len(completed))
    assert state[queue].ready == len(ids) - len(completed)
    assert state[rig.dead_letter_queue("c2")].messages == 0
    assert all(q.messages == 0 for name, q in state.items() if ".retry." in name)

    await restart(worker, sleep_scale=0)
    await rig.wait_processed(ids)
    await rig.finish(workers=[worker], expected_starts=2)
    assert rig.ledger.dead_lettered_ids() == set()


async def handed_back(rig: Rig, queue: str, ready: int) -> Mapping[str, QueueState]:
    """The queues once ``queue`` holds ``ready`` messages and none unacked, or after 15 s.

    rabbitmqctl's counts of a quorum queue are refreshed every 5 s (the queue's tick), so
    right after a worker exits they can still show what it held, or nothing at all."""
    deadline = time.monotonic() + 15
    while True:
        state = await asyncio.to_thread(rig.queues)
        if (state[queue].ready, state[queue].unacked) == (ready, 0):
            return state
        if time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("variant", ["grace-expires", "second-signal", "blocked-thread"])
async def test_c3_a_handler_outliving_the_drain_is_handed_back_without_spending_an_attempt(
    shared_rig: Rig, variant: str
) -> None:
    rig = shared_rig.with_settings(grace=3.0)
    spec = Spec("c3", ("c3.event",), sync=variant == "blocked-thread")
    queue = rig.work_queue("c3")
    worker = rig.worker([spec])
    await restart(worker)
    fault = {"fault": "block", "block": 60} if variant == "blocked-thread" else {"fault": "hang"}
    [event_id] = await rig.publish("c3.event", [{"n": 0, **fault, "fault_calls": 1}])
    await rig.wait(lambda: rig.ledger.count_invocations() == 1, what="the handler started")
    t0 = time.time()
    worker.signal(signal.SIGTERM)
    if variant == "second-signal":
        await asyncio.sleep(1)
        t0 = time.time()
        worker.signal(signal.SIGINT)
        code = await asyncio.to_thread(worker.wait, 2 + LOAD_SLACK)
        assert code == ExitCode.INTERRUPTED
        assert time.time() - t0 <= 2, "the second signal did not stop the worker at once"
    else:
        code = await asyncio.to_thread(worker.wait, 3 + 2 + LOAD_SLACK)
        assert code == ExitCode.OK
        assert time.time() - t0 <= 3 + 2, f"exit {time.time() - t0:.1f}s after SIGTERM"
    state = await handed_back(rig, queue, 1)
    assert state[queue].ready == 1, "the message was not handed back to its queue"
    assert state[rig.dead_letter_queue("c3")].messages == 0
    assert all(q.messages == 0 for name, q in state.items() if ".retry." in name)

    await restart(worker)
    await rig.wait_processed([event_id])
    await rig.finish(workers=[worker], expected_starts=2)
    first, second = rig.ledger.invocations(event_id)
    assert second.redelivered and second.attempt == first.attempt == 1


async def crash_loop(rig: Rig) -> tuple[str, list[str], WorkerProcess, int]:
    """Message X kills its worker on every delivery; 999 innocents around it."""
    spec = Spec("c4", ("c4.event",))
    await rig.declare([spec])
    before = await rig.publish("c4.event", [{"n": i, "sleep": 0.05} for i in range(500)])
    [poison] = await rig.publish("c4.event", [{"n": -1, "fault": "kill"}], tag="poison")
    after = await rig.publish("c4.event", [{"n": i, "sleep": 0.05} for i in range(499)])
    worker = rig.worker([spec])
    stop = asyncio.Event()
    supervisor = supervise(worker, stop, max_starts=8)
    innocents = before + after
    dead = rig.dead_letter_queue("c4")
    deadline = time.monotonic() + 120
    try:
        # Until all 1000 are processed or dead-lettered (the dead-letter queue is counted, not
        # read).
        while len(rig.ledger.processed()) + await rig.view.count(dead) < 1000:
            assert time.monotonic() < deadline, "the crash loop did not end"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        starts = await supervisor
    return poison, innocents, worker, starts


async def test_c4_only_the_crash_looping_message_is_dead_lettered(shared_rig: Rig) -> None:
    """A message that kills its worker on every delivery is dead-lettered by the quorum delivery
    limit, and alone: a restarted worker runs redelivered messages one at a time (probation),
    so the innocents fetched with it are not returned with it round after round."""
    rig = shared_rig.with_settings(delivery_limit=3)
    poison, innocents, worker, starts = await crash_loop(rig)
    await rig.finish(workers=[worker], expected_starts=starts)
    assert rig.ledger.dead_lettered_ids() == {poison}, "an innocent message was dead-lettered"
    assert set(innocents) <= rig.ledger.processed()
    [dead_lettered] = rig.ledger.dead_lettered_rows()
    # The broker moved it (x-death), so no attempt header: its deliveries are in the ledger.
    assert dead_lettered["reason"] == "delivery_limit", dead_lettered["headers"]
    crashes = [c for c in rig.ledger.invocations(poison) if c.finished is None]
    assert len(crashes) >= 3, f"dead-lettered after {len(crashes)} deliveries"
    assert starts <= 1 + 4, f"{starts} starts"
    assert "on probation: running redelivered message" in worker.all_logs()


async def test_c4_on_a_classic_queue_the_worker_counts_redeliveries_itself(
    shared_rig: Rig,
) -> None:
    """A classic queue has no delivery limit: the worker moves each redelivered message, with a
    count of its own, to the handler's probation queue, where messages run one at a time; the
    crash-looping one is dead-lettered past the limit, with a diagnosis, and alone."""
    rig = shared_rig.with_settings(delivery_limit=3, queue_type="classic")
    poison, innocents, worker, starts = await crash_loop(rig)
    await rig.finish(workers=[worker], expected_starts=starts)
    assert rig.ledger.dead_lettered_ids() == {poison}, "an innocent message was dead-lettered"
    assert set(innocents) <= rig.ledger.processed()
    [dead_lettered] = rig.ledger.dead_lettered_rows()
    assert dead_lettered["reason"] == "delivery_limit", dead_lettered["headers"]
    assert dead_lettered["headers"]["x-eventworker-exception"] == "DeliveryLimitExceeded"
    crashes = [c for c in rig.ledger.invocations(poison) if c.finished is None]
    assert len(crashes) == 1 + 3, f"dead-lettered after {len(crashes)} deliveries"
    assert starts <= 1 + 4, f"{starts} starts"
    assert "moved to " in worker.all_logs() and ".probation to run alone" in worker.all_logs()
