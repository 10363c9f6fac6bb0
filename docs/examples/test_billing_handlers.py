"""Testing a handler with eventworker.testing (docs/plugins.md): no broker needed, except for
the last test, which runs a real worker with the eventworker_worker fixture."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from billing_handlers import bill_order, record_charge

from eventworker.testing import TestWorker, run_handler
from eventworker.worker.decisions import Ack


async def test_an_order_is_billed_and_a_charge_published() -> None:
    outcome = await run_handler(bill_order, {"order_id": "o-1", "total": 12.5})
    assert outcome.acked
    assert [(p.routing_key, p.data) for p in outcome.published] == [
        ("billing.charged", {"order_id": "o-1"})
    ]


async def test_a_negative_total_is_dead_lettered_with_its_reason() -> None:
    outcome = await run_handler(bill_order, {"order_id": "o-2", "total": -5})
    assert outcome.dead_letter_reason == "rejected"
    assert outcome.copy_headers["x-eventworker-error"] == "negative total"


async def test_a_failed_follow_up_is_retried_after_the_policy_delay() -> None:
    outcome = await run_handler(
        bill_order, {"order_id": "o-3", "total": 1}, refuse_publish=["billing.charged"]
    )
    assert outcome.retry_delay == 1


async def test_a_real_worker_acks_it(
    eventworker_worker: Callable[..., AbstractAsyncContextManager[TestWorker]],
) -> None:
    async with eventworker_worker(bill_order, record_charge) as worker:
        event_id = await worker.publish("orders.eu.created", {"order_id": "o-4", "total": 3})
        assert await worker.outcome(event_id, handler="bill_order") == [Ack()]
