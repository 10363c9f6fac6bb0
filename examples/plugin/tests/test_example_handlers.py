"""The example plugin's handlers, tested with eventworker's test kit: in process without a
broker (run_handler), and end to end with a real worker (the eventworker_worker fixture)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from eventworker_example.handlers import (
    UserSignedUp,
    bill_order,
    broken,
    flaky,
    greet,
    send_welcome,
)
from eventworker_example.mail import Mailer, mailer
from loguru import logger

from eventworker.testing import Published, TestWorker, run_handler, run_handler_sync
from eventworker.worker.decisions import Ack, DeadLetter, RetryIn

Running = Callable[..., AbstractAsyncContextManager[TestWorker]]


def test_greet_is_acked_and_publishes_nothing() -> None:
    outcome = run_handler_sync(greet, {"name": "Ada"})
    assert outcome.acked and outcome.error is None and outcome.published == []


async def test_flaky_is_retried_after_its_policy_delays_then_succeeds() -> None:
    first = await run_handler(flaky, {"job": 1})
    second = await run_handler(flaky, {"job": 1}, attempt=2)
    third = await run_handler(flaky, {"job": 1}, attempt=3)
    assert (first.retry_delay, second.retry_delay) == (1, 2)
    assert isinstance(first.error, ConnectionError)
    assert third.acked


async def test_broken_is_dead_lettered_after_its_last_attempt() -> None:
    outcome = await run_handler(broken, {"job": 2}, attempt=3)
    assert outcome.dead_letter_reason == "exception"
    assert isinstance(outcome.error, RuntimeError)
    assert outcome.copy_headers["x-eventworker-error"] == "this handler always fails"


async def test_bill_order_publishes_the_charge_with_the_order_as_its_cause() -> None:
    outcome = await run_handler(
        bill_order, {"order_id": "o-1", "total": 12.5}, id="order-1", correlation_id="c-1"
    )
    assert outcome.acked
    assert outcome.published == [
        Published(
            routing_key="billing.charged",
            data={"order_id": "o-1", "amount": 12.5},
            id=None,
            headers=None,
            correlation_id="c-1",
            causation_id="order-1",
        )
    ]


async def test_bill_order_dead_letters_bad_payloads_and_negative_totals() -> None:
    invalid = await run_handler(bill_order, {"order_id": "o-2", "total": "n/a"})
    negative = await run_handler(bill_order, {"order_id": "o-3", "total": -1})
    assert invalid.dead_letter_reason == "schema_error" and invalid.published == []
    assert negative.dead_letter_reason == "rejected" and str(negative.error) == "negative total"


async def test_a_refused_follow_up_fails_the_attempt_and_it_is_retried() -> None:
    outcome = await run_handler(
        bill_order, {"order_id": "o-4", "total": 1}, refuse_publish=["billing.charged"]
    )
    assert outcome.retry_delay == 1 and outcome.published == []


async def test_with_a_real_worker_flaky_succeeds_on_its_third_attempt(
    eventworker_worker: Running,
) -> None:
    async with eventworker_worker(flaky, greet) as worker:
        event_id = await worker.publish("demo.flaky", {"job": 3})
        decisions = await worker.outcome(event_id, handler="flaky", timeout=30)
    assert decisions == [RetryIn(1), RetryIn(2), Ack()]
    assert not any(isinstance(d, DeadLetter) for d in decisions)


async def test_send_welcome_mails_through_the_mailer_resource_faked() -> None:
    fake = Mailer()
    outcome = await run_handler(
        send_welcome, {"email": "ada@example.org", "name": "Ada"}, resources={Mailer: fake}
    )
    assert outcome.acked
    assert fake.sent == [("ada@example.org", "Welcome, Ada")]


async def test_send_welcome_validates_its_inferred_model() -> None:
    outcome = await run_handler(
        send_welcome, {"email": "x@example.org"}, resources={Mailer: Mailer()}
    )
    assert send_welcome.model is UserSignedUp
    assert outcome.dead_letter_reason == "schema_error"


async def test_with_a_real_worker_the_mailer_is_opened_once_and_closed_after_the_drain(
    eventworker_worker: Running,
) -> None:
    async with eventworker_worker(send_welcome, resources=[mailer]) as worker:
        client = worker.worker.resources[Mailer]
        first = await worker.publish("users.signed_up", {"email": "a@example.org", "name": "A"})
        second = await worker.publish("users.signed_up", {"email": "b@example.org", "name": "B"})
        assert await worker.outcome(first) == [Ack()]
        assert await worker.outcome(second) == [Ack()]
    assert client.sent == [("a@example.org", "Welcome, A"), ("b@example.org", "Welcome, B")]
    assert client.closed


async def test_the_timing_middleware_logs_each_handler_call() -> None:
    from eventworker_example.handlers import greet
    from eventworker_example.timing import Timing

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        outcome = await run_handler(greet, {"name": "Ada"}, middleware=[Timing()])
    finally:
        logger.remove(sink)
    assert outcome.acked
    assert any(" ms" in line and "took" in line for line in lines), lines
