"""D: handler failures and the retry path (reliability guide §7 D1-D5)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import defaultdict
from typing import Any

import aio_pika
import orjson
import pytest

from eventworker import envelope
from eventworker.topology import layout
from tests.faults import traffic
from tests.faults.plugin import Spec
from tests.faults.rig import LOAD_SLACK, Rig
from tests.support.private_node import PrivateNode
from tests.support.timing import TTL_EARLY


async def test_d1_transient_failures_are_retried_after_their_delays_then_succeed(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d1", ("d1.event",), max_attempts=5, delays=(1, 3))
    await rig.declare([spec])
    n = 500
    flaky = set(random.Random(1).sample(range(n), n // 10))
    ids = await rig.publish(
        "d1.event", [{"n": i, "fail_attempts": 2 if i in flaky else 0} for i in range(n)]
    )
    worker = rig.started([spec])
    await rig.wait_processed(ids, timeout=60)
    await rig.finish(workers=[worker])

    assert rig.ledger.dead_lettered_ids() == set()
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
        assert 1.0 - TTL_EARLY <= gap_1 <= 3.0 + LOAD_SLACK, (
            f"{event_id}: attempt 2 {gap_1:.2f}s after 1"
        )
        assert 3.0 - TTL_EARLY <= gap_2 <= 5.0 + LOAD_SLACK, (
            f"{event_id}: attempt 3 {gap_2:.2f}s after 2"
        )
    assert rig.queues()[rig.retry_queue(1)].messages == 0
    assert rig.queues()[rig.retry_queue(3)].messages == 0


async def test_d2_spent_and_permanent_failures_are_dead_lettered_with_their_diagnosis(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d2", ("d2.event",), max_attempts=3, delays=(0.5,))
    worker = rig.started([spec])
    n = 1000
    picks = random.Random(2).sample(range(n), 70)
    always, permanent = set(picks[:50]), set(picks[50:70])
    bodies = [
        {"n": i, "fail_attempts": 1000 if i in always else 0, "permanent": i in permanent}
        for i in range(n)
    ]
    ids = traffic.new_ids(n, "d2")
    # 10 more always-failing ids come from a plain AMQP client, with an expiration, CC and
    # BCC the dead-letter copies must not carry.
    expiring = traffic.new_ids(10, "d2x")
    expiring_body = orjson.dumps({"n": -1, "fail_attempts": 1000})
    await rig.publish_raw(
        [
            (
                "d2.event",
                aio_pika.Message(
                    expiring_body,
                    message_id=event_id,
                    content_type="application/json",
                    expiration=5,
                    headers={"CC": ["d2.nowhere"], "BCC": ["d2.nowhere"]},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
            )
            for event_id in expiring
        ]
    )
    published_expiring = time.time()
    await rig.publish("d2.event", bodies, ids=ids)
    dead_lettered_ids = {ids[i] for i in always | permanent} | set(expiring)
    await rig.wait_processed({ids[i] for i in range(n)} - dead_lettered_ids, timeout=60)
    await rig.wait_dead_lettered("d2", len(dead_lettered_ids))
    await rig.finish(workers=[worker])

    assert rig.ledger.dead_lettered_ids() == dead_lettered_ids
    sha = {ids[i]: hashlib.sha256(orjson.dumps(bodies[i])).hexdigest() for i in range(n)}
    sha |= {e: hashlib.sha256(expiring_body).hexdigest() for e in expiring}
    for row in rig.ledger.dead_lettered_rows():
        event_id, headers, props = row["id"], row["headers"], row["properties"]
        calls = rig.ledger.invocations(event_id)
        is_permanent = event_id in {ids[i] for i in permanent}
        assert [c.attempt for c in calls] == ([1] if is_permanent else [1, 2, 3])
        assert row["reason"] == ("give_up" if is_permanent else "exception")
        assert row["attempts"] == len(calls)
        assert row["body_sha256"] == sha[event_id], "the dead-lettered body is not byte-identical"
        assert props["message_id"] == event_id
        assert props["content_type"] == "application/json"
        assert props["expiration"] is None, f"{event_id} carries an expiration"
        assert headers["x-eventworker-routing-key"] == "d2.event"
        assert headers["x-eventworker-exception"] in ("RetryableError", "PermanentError")
        assert 0 < len(headers["x-eventworker-error"].encode()) <= 1024
        assert headers["x-eventworker-first-failure"] <= headers["x-eventworker-last-failure"]
        assert headers["x-eventworker-host"]
        assert not {"CC", "BCC", "cc", "bcc", "x-death"} & set(headers), headers
    # The dead-letter copies outlive the expiration their originals carried, and the dead-letter
    # queue has nothing that could drop them.
    await asyncio.sleep(max(0.0, published_expiring + 6 - time.time()))
    queue = rig.queues()[rig.dead_letter_queue("d2")]
    assert queue.messages == len(dead_lettered_ids)
    assert not {"x-message-ttl", "x-max-length", "x-max-length-bytes", "x-expires"} & set(
        queue.arguments
    ), queue.arguments
    assert queue.arguments.get("x-overflow") != "drop-head"
    assert queue.policy == "", f"a policy applies to the dead-letter queue: {queue.policy}"


async def test_d3_a_handler_timeout_is_a_failure_retried_then_dead_lettered(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d3", ("d3.event",), max_attempts=2, delays=(0.5,), timeout=2)
    worker = rig.started([spec])
    [hung] = await rig.publish("d3.event", [{"n": 0, "fault": "hang"}], tag="hung")
    normal = await rig.publish("d3.event", [{"n": i} for i in range(500)])
    await rig.wait_processed(normal)
    await rig.wait_dead_lettered("d3", 1)
    await rig.finish(workers=[worker])

    [dead_lettered] = rig.ledger.dead_lettered_rows()
    assert dead_lettered["id"] == hung and dead_lettered["reason"] == "timeout"
    calls = rig.ledger.invocations(hung)
    assert [c.attempt for c in calls] == [1, 2]
    for call in calls:
        assert call.outcome == "cancelled"
        ran = (call.finished or 0) - call.started
        assert 1.5 <= ran <= 2.5 + LOAD_SLACK, f"the timeout cut attempt {call.attempt} at {ran}"
    assert p99_latency(rig, normal) < 3.0 + LOAD_SLACK


def p99_latency(rig: Rig, ids: list[str]) -> float:
    """The 99th percentile of publish-to-done time of ``ids``."""
    published = rig.ledger.published_at()
    done = {c.id: c.finished for c in rig.ledger.invocations() if c.outcome == "ok" and c.finished}
    latencies = sorted(done[i] - published[i] for i in ids)
    return latencies[int(len(latencies) * 0.99) - 1]


async def test_d4_a_message_re_entering_one_delay_queue_is_not_dropped_as_a_cycle(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d4", ("d4.event",), max_attempts=7, delays=(1,))
    worker = rig.started([spec])
    [event_id] = await rig.publish("d4.event", [{"n": 0, "fail_attempts": 6}])
    await rig.wait_processed([event_id], timeout=60)
    await rig.finish(workers=[worker])

    assert [c.attempt for c in rig.ledger.invocations(event_id)] == [1, 2, 3, 4, 5, 6, 7]
    assert rig.queues()[rig.retry_queue(1)].messages == 0


async def test_d4_messages_waiting_in_a_delay_queue_survive_a_missing_return_binding(
    node_rig: Rig, node: PrivateNode
) -> None:
    """RabbitMQ 3.10 holds an at-least-once dead letter with no route in its queue and
    retries after ``dead_letter_worker_publisher_confirm_timeout`` (3 min by default, and
    ``list_queues`` does not count it meanwhile); the private node shortens that to 2 s."""
    rig = node_rig
    node.ctl.eval(
        "application:set_env(rabbit, dead_letter_worker_publisher_confirm_timeout, 2000)."
    )
    spec = Spec("d4b", ("d4b.event",), max_attempts=3, delays=(3,))
    worker = rig.started([spec])
    ids = await rig.publish("d4b.event", [{"n": i, "fail_attempts": 1} for i in range(100)])
    await rig.wait(lambda: len(rig.ledger.invocations()) == 100, what="100 first attempts")
    await unbind_return(rig, "d4b")
    await asyncio.sleep(5)
    assert rig.ledger.processed() == set(), "a retry came back without its binding"
    await bind_return(rig, "d4b")
    await rig.wait_processed(ids, timeout=60)
    await rig.finish(workers=[worker])
    assert all(c.attempt in (1, 2) for c in rig.ledger.invocations())


@pytest.mark.slow
async def test_d4_on_a_stock_broker_unroutable_retries_come_back_after_three_minutes(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    spec = Spec("d4s", ("d4s.event",), max_attempts=3, delays=(3,))
    worker = rig.started([spec])
    ids = await rig.publish("d4s.event", [{"n": i, "fail_attempts": 1} for i in range(100)])
    await rig.wait(lambda: len(rig.ledger.invocations()) == 100, what="100 first attempts")
    await unbind_return(rig, "d4s")
    await asyncio.sleep(5)
    await bind_return(rig, "d4s")
    await rig.wait_processed(ids, timeout=240)
    await rig.finish(workers=[worker])


async def _return_binding(rig: Rig, handler: str, bind: bool) -> None:
    """The binding that brings expired retries back to ``handler``'s queue, through the
    AMQP client (rabbitmqctl has no unbind)."""
    channel = await rig.connection.channel()
    try:
        queue = await channel.get_queue(rig.work_queue(handler), ensure=False)
        exchange = layout.return_exchange(rig.settings.exchange)
        arguments: dict[str, Any] = {"x-match": "all", envelope.RETURN_TO: queue.name}
        if bind:
            await queue.bind(exchange, "", arguments=arguments)
        else:
            await queue.unbind(exchange, "", arguments=arguments)
    finally:
        await channel.close()


async def unbind_return(rig: Rig, handler: str) -> None:
    await _return_binding(rig, handler, bind=False)


async def bind_return(rig: Rig, handler: str) -> None:
    await _return_binding(rig, handler, bind=True)


@pytest.mark.parametrize(
    "long_delay",
    [pytest.param(8.0, id="8s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)],
)
async def test_d5_a_short_retry_is_not_held_behind_a_long_one(
    shared_rig: Rig, long_delay: float
) -> None:
    rig = shared_rig
    spec = Spec("d5", ("d5.event",), max_attempts=3, delays=(1, long_delay))
    worker = rig.started([spec])
    [a] = await rig.publish("d5.event", [{"n": 0, "retry_in": long_delay}], tag="a")
    [b] = await rig.publish("d5.event", [{"n": 1, "retry_in": 1}], tag="b")
    await rig.wait_processed([a, b], timeout=long_delay + 30)
    await rig.finish(workers=[worker])

    def gap(event_id: str) -> float:
        first, second = rig.ledger.invocations(event_id)
        return second.started - (first.finished or 0)

    assert 1.0 - TTL_EARLY <= gap(b) <= 3.0 + LOAD_SLACK, f"B came back after {gap(b):.1f}s"
    assert long_delay - TTL_EARLY <= gap(a) <= long_delay + 3 + LOAD_SLACK, f"A after {gap(a):.1f}s"
