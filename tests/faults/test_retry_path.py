"""D: handler failures and the retry path (reliability guide §7 D1-D5)."""

from __future__ import annotations

import random
from collections import defaultdict

from tests.faults.plugin import Spec
from tests.faults.rig import LOAD_SLACK, Rig


async def test_d1_transient_failures_are_retried_after_their_delays_then_succeed(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d1", ("d1.event",), max_attempts=5, delays=(1, 3))
    await rig.declare([spec])
    n = 1000
    flaky = set(random.Random(1).sample(range(n), n // 10))
    ids = await rig.publish(
        "d1.event", [{"n": i, "fail_attempts": 2 if i in flaky else 0} for i in range(n)]
    )
    worker = rig.started([spec])
    await rig.wait_processed(ids, timeout=60)
    await rig.finish(workers=[worker])

    assert rig.ledger.parked_ids() == set()
    calls = defaultdict(list)
    for call in rig.ledger.invocations():
        calls[call.id].append(call)
    for i, event_id in enumerate(ids):
        got = calls[event_id]
        assert [c.outcome for c in got].count("ok") == 1, got
        if i not in flaky:
            assert [c.attempt for c in got] == [1], got
            continue
        assert [c.attempt for c in got] == [1, 2, 3], got
        gap_1 = got[1].started - (got[0].finished or 0)
        gap_2 = got[2].started - (got[1].finished or 0)
        assert 1.0 <= gap_1 <= 3.0 + LOAD_SLACK, f"{event_id}: attempt 2 {gap_1:.2f}s after 1"
        assert 3.0 <= gap_2 <= 5.0 + LOAD_SLACK, f"{event_id}: attempt 3 {gap_2:.2f}s after 2"
    assert rig.queues()[rig.retry_queue(1)].messages == 0
    assert rig.queues()[rig.retry_queue(3)].messages == 0
