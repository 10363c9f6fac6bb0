"""B: broker and connection faults — restarts, kill -9, forced closes, deleted queues,
resource alarms (reliability guide §7 B1-B3, B6, B7; the network path's B4 and B5 are in
test_network_faults.py). Faults that stop, kill or reconfigure a broker run on the private
node; closing this test's own connections and deleting its own queues is done on the shared
broker."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventworker.errors import ExitCode
from tests.faults import traffic
from tests.faults.plugin import Spec
from tests.faults.processes import settings_env
from tests.faults.rig import LOAD_SLACK, Rig
from tests.support.private_node import PrivateNode

EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))


def cli_env(rig: Rig) -> dict[str, str]:
    return settings_env(rig.settings)


async def consumed_again(rig: Rig, queue: str, timeout: float) -> float:
    """Seconds until rabbitmqctl shows a consumer on ``queue``."""
    started = time.monotonic()
    while not (await asyncio.to_thread(rig.ctl.consumers, queue)).get(queue):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"no consumer on {queue} within {timeout}s")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.parametrize(
    "n", [pytest.param(2000, id="2k"), pytest.param(20_000, id="20k", marks=pytest.mark.slow)]
)
async def test_b1_broker_restarted_twice_mid_stream_loses_nothing(
    node_rig: Rig, node: PrivateNode, n: int
) -> None:
    rig = node_rig
    spec = Spec("b1", ("b1.event",))
    queue = rig.work_queue("b1")
    worker = rig.started([spec])
    ids = traffic.new_ids(n, "b1")
    events = traffic.outgoing("b1.event", [{"n": i, "sleep": 0.005} for i in range(n)], ids)
    publishing = asyncio.create_task(
        traffic.publish_through_faults(rig.url, rig.settings.exchange, rig.ledger, events)
    )
    for share in (0.3, 0.7):
        target = share * n
        await rig.wait(
            lambda: rig.ledger.count_processed() >= target,  # noqa: B023 - awaited here
            timeout=120,
            what=f"{share:.0%} processed",
        )
        await asyncio.to_thread(node.stop_app)
        await asyncio.sleep(5)
        await asyncio.to_thread(node.start_app)
        assert await consumed_again(rig, queue, timeout=30) <= 30
    results = await publishing
    await rig.reconnect()
    assert len(results) == n, "the publisher left ids without an outcome"
    await rig.wait_processed(rig.ledger.confirmed(), timeout=120)
    report = await rig.finish(workers=[worker])
    print(
        f"publish outcomes: {len(rig.ledger.confirmed())} confirmed, "
        f"{len(rig.ledger.unknown())} unknown, recovered {report.recovered}"
    )


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_b2_broker_killed_with_sigkill_mid_stream_loses_nothing_confirmed(
    node_rig: Rig, node: PrivateNode, queue_type: str
) -> None:
    """``kill -9`` of the node's beam while a worker consumes and a producer publishes: no
    shutdown, no connection close, unsynced state gone. Booted again on the same database,
    the broker still holds every confirmed persistent message, and the worker (never
    restarted) reconnects by itself and handles them."""
    rig = node_rig.with_settings(queue_type=queue_type)
    spec = Spec("b2", ("b2.event",))
    queue = rig.work_queue("b2")
    await rig.declare([spec])
    n = 1000
    backlog = await rig.publish("b2.event", [{"n": i, "sleep": 0.005} for i in range(n)])
    worker = rig.started([spec])
    ids = traffic.new_ids(n, "b2s")
    events = traffic.outgoing("b2.event", [{"n": i, "sleep": 0.005} for i in range(n)], ids)
    publishing = asyncio.create_task(
        traffic.paced(rig.url, rig.settings.exchange, rig.ledger, events, per_second=200)
    )
    await rig.wait(lambda: rig.ledger.count_processed() >= n * 0.4, timeout=120, what="40%")
    held = await rig.view.count(queue)
    beam = node.os_pid()
    await asyncio.to_thread(node.kill9)
    killed_at = rig.ledger.count_processed()
    await asyncio.sleep(1)
    await asyncio.to_thread(node.restart)
    assert node.os_pid() != beam
    assert await consumed_again(rig, queue, timeout=60) <= 60
    results = await publishing
    await rig.reconnect()
    assert len(results) == n, "the publisher left ids without an outcome"
    await rig.wait_processed(rig.ledger.confirmed(), timeout=120)
    report = await rig.finish(workers=[worker])

    assert worker.alive() and len(worker.pids) == 1, "the worker was restarted"
    queues = 2 if queue_type == "classic" else 1  # a classic handler's probation queue too
    assert f"reconnected: {queues} queue(s) consuming again" in worker.log()
    assert held >= 100, f"only {held} confirmed messages were in the queue at the kill"
    assert set(backlog) <= rig.ledger.processed()
    print(
        f"killed with {held} ready in the queue, {killed_at} processed; "
        f"{len(rig.ledger.confirmed())} confirmed, "
        f"{len(rig.ledger.unknown())} unknown, recovered {report.recovered}, dup {report.dup}"
    )


@pytest.mark.parametrize(
    ("n", "sleeps", "every"),
    [
        pytest.param(600, (0.1, 0.3), 1.5, id="600"),
        pytest.param(5000, (0.3, 0.3), 5.0, id="5k", marks=pytest.mark.slow),
    ],
)
async def test_b3_connections_closed_under_load_are_restored_without_stale_acks(
    node_rig: Rig, node: PrivateNode, n: int, sleeps: tuple[float, float], every: float
) -> None:
    rig = node_rig
    spec = Spec("b3", ("b3.event",))
    log_start = node.log_size()
    await rig.declare([spec])
    rng = random.Random(3)
    ids = await rig.publish("b3.event", [{"n": i, "sleep": rng.uniform(*sleeps)} for i in range(n)])
    worker = rig.started([spec])
    closes: list[tuple[float, float]] = []
    for k in range(5):
        await asyncio.sleep(every)
        before = time.time()
        closed = await asyncio.to_thread(
            rig.ctl.close_connections, "eventworker worker [b3] ", "fault injected"
        )
        closes.append((before, time.time()))
        assert closed == 1, f"closed {closed} consuming connections"
        await rig.wait(
            lambda: worker.log().count("reconnected: 1 queue(s) consuming again") > k,  # noqa: B023 - awaited here
            timeout=30,
            what="the worker consuming again",
        )
    await rig.wait_processed(ids, timeout=120)
    report = await rig.finish(workers=[worker])

    assert report.dup <= 5 * rig.settings.prefetch
    broker_log = node.log_text()[log_start:]
    for error in ("unknown delivery tag", "PRECONDITION_FAILED"):
        assert error not in broker_log, f"the broker logged {error!r}: a stale tag was acked"
    calls = rig.ledger.invocations()
    for before, after in closes:
        in_flight = [c for c in calls if c.started < before and (c.finished or 1e18) > after]
        for call in in_flight:
            again = [c for c in calls if c.id == call.id and c.started > before]
            assert any(c.redelivered for c in again), f"{call.id} in flight, not redelivered"


async def test_b6_a_deleted_work_queue_is_declared_again_with_its_bindings(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("b6", ("b6.event",))
    queue = rig.work_queue("b6")
    worker = rig.started([spec])
    before = await rig.publish("b6.event", [{"n": i} for i in range(20)])
    await rig.wait_processed(before)
    await asyncio.to_thread(rig.ctl.delete_queue, queue)
    assert await consumed_again(rig, queue, timeout=10) <= 10
    after = await rig.publish("b6.event", [{"n": i} for i in range(100)])
    assert rig.ledger.confirmed() >= set(after), "the queue came back without its binding"
    await rig.wait_processed(after)
    await rig.finish(workers=[worker])

    errors = [line for line in worker.log().splitlines() if " ERROR " in line and queue in line]
    assert errors, "no ERROR names the deleted queue"


async def publisher_blocked(rig: Rig) -> list[tuple[str, str]]:
    """Connection states once the worker's publishing connection is blocked, or after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        states = await asyncio.to_thread(rig.ctl.connection_states)
        publishing = [s for name, s in states if name.startswith("eventworker worker-publisher")]
        if publishing == ["blocked"] or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.5)


async def test_b7_a_memory_alarm_blocks_publishing_but_not_acks(
    node_rig: Rig, node: PrivateNode
) -> None:
    rig = node_rig
    spec = Spec("b7", ("b7.event",), max_attempts=3, delays=(0.5,))
    queue = rig.work_queue("b7")
    await rig.declare([spec])
    n = 1500
    flaky = set(random.Random(7).sample(range(n), n // 5))
    ids = await rig.publish(
        "b7.event",
        [{"n": i, "sleep": 0.02, "fail_attempts": int(i in flaky)} for i in range(n)],
    )
    worker = rig.started([spec])
    await rig.wait(lambda: rig.ledger.count_processed() >= n // 5, what="20% processed")
    await asyncio.to_thread(node.set_memory_watermark, 0)
    alarm = time.time()
    done_before = rig.ledger.count_processed()
    cli = await asyncio.to_thread(
        subprocess.run,
        [EVENTWORKER, "publish", "--timeout", "5", "b7.event", '{"n": -1}'],
        env=cli_env(rig),
        capture_output=True,
        text=True,
        timeout=60,
    )
    cli_took = time.time() - alarm
    states = await publisher_blocked(rig)
    await asyncio.sleep(max(0.0, alarm + 12 - time.time()))
    done_during = rig.ledger.count_processed() - done_before
    unacked = (await asyncio.to_thread(rig.queues))[queue].unacked
    await asyncio.to_thread(node.set_memory_watermark, 0.4)
    await rig.wait_processed(ids, timeout=120)
    await rig.finish(workers=[worker])

    # Within the publish timeout + 2 s, as the CLI measures its publishing (and the process
    # as a whole, Python's start-up included, with some slack for this busy machine).
    cli_publishing = float(re.findall(r"0 confirmed in ([0-9.]+)s", cli.stdout)[0])
    assert cli.returncode == ExitCode.FAILED and cli_publishing <= 5 + 2, cli.stdout + cli.stderr
    assert cli_took <= 5 + 2 + LOAD_SLACK
    assert "blocked" in cli.stderr
    consuming = [s for name, s in states if name.startswith("eventworker worker [b7]")]
    publishing = [s for name, s in states if name.startswith("eventworker worker-publisher")]
    # "blocking": it would be blocked if it published, which it never does, so deliveries and
    # acks flow; the publishing connection, which did publish, is "blocked".
    assert consuming in (["running"], ["blocking"]), f"the consuming connection is {consuming}"
    assert publishing == ["blocked"], f"the publishing connection is {publishing}"
    assert done_during > 0, "no delivery was processed and acked during the alarm"
    assert unacked <= rig.settings.prefetch
    assert rig.ledger.dead_lettered_ids() == set()
