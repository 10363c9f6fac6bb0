"""The test kit itself: run_handler reports what the worker would do for each kind of outcome,
and running_worker waits for outcomes of a real worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from eventworker import Context, Event, Retry, RetryPolicy, handler
from eventworker.errors import EnvelopeError, HandlerTimeoutError, InvalidInputError
from eventworker.settings import RetrySettings, Settings
from eventworker.testing import run_handler, run_handler_sync, running_worker
from eventworker.worker.decisions import DeadLetter, RetryIn


@handler("kit.slow", timeout=0.05, retry=RetryPolicy(max_attempts=2, delays=(3,)))
async def slow(event: Event[object], ctx: Context) -> None:
    await asyncio.sleep(10)


@handler("kit.later", retry=RetryPolicy(max_attempts=3, delays=(1, 10, 60)))
def later(event: Event[object], ctx: Context) -> None:
    raise Retry(delay=7, reason="not yet")


@handler("kit.fail", retry=RetryPolicy(max_attempts=3, delays=(0.2,)))
async def failing(event: Event[object], ctx: Context) -> None:
    raise RuntimeError("always")


@handler("kit.*")
async def anything(event: Event[object], ctx: Context) -> None:
    await ctx.publish("kit.seen", {"type": event.type})


def test_a_timeout_is_a_failed_attempt_retried_then_dead_lettered() -> None:
    first = run_handler_sync(slow, {})
    last = run_handler_sync(slow, {}, attempt=2)
    assert first.retry_delay == 3 and isinstance(first.error, HandlerTimeoutError)
    assert last.dead_letter_reason == "timeout"


def test_a_sync_handler_asking_for_a_later_retry_gets_the_next_tier() -> None:
    outcome = run_handler_sync(later, {"n": 1})
    assert outcome.decision == RetryIn(10) and str(outcome.error) == "not yet"
    assert outcome.moved_to is not None and outcome.moved_to.endswith("retry.10s")


def test_with_delay_levels_the_kit_reports_an_exact_retry_delay() -> None:
    outcome = run_handler_sync(later, {"n": 1}, settings=Settings.model_construct(delay_levels=25))
    assert outcome.decision == RetryIn(7, levels=True) and outcome.retry_delay == 7
    assert outcome.moved_to == "eventworker.test.delay.2"  # 7 s = 111b: level 2 first


async def test_settings_overrides_change_the_policy_the_kit_applies() -> None:
    settings = Settings.model_construct(
        retry_overrides={"later": RetrySettings(max_attempts=1, delays=(5,))}
    )
    outcome = await run_handler(later, {}, settings=settings)
    assert outcome.decision == DeadLetter("retry_requested")


async def test_input_that_never_reaches_the_handler_is_reported_as_an_envelope_error() -> None:
    outcome = await run_handler(later, body=b"{not json")
    assert outcome.dead_letter_reason == "decode_error"
    assert isinstance(outcome.error, EnvelopeError)


async def test_a_wildcard_binding_needs_a_routing_key() -> None:
    with pytest.raises(ValueError, match="routing_key"):
        await run_handler(anything, {})
    outcome = await run_handler(anything, {}, routing_key="kit.thing")
    assert outcome.acked and outcome.published[0].data == {"type": "kit.thing"}


async def test_running_worker_reports_a_dead_letter_after_every_attempt(
    settings: Settings,
) -> None:
    async with running_worker(failing, url=settings.url.get_secret_value()) as worker:
        event_id = await worker.publish("kit.fail", {"n": 1})
        decisions = await worker.outcome(event_id, timeout=30)
    assert decisions == [RetryIn(0.2), RetryIn(0.2), DeadLetter("exception")]


@handler("kit.remind")
async def reminding(event: Event[object], ctx: Context) -> None:
    await ctx.publish("kit.reminder", {}, delay=90.5)
    await ctx.publish("kit.reminder", {}, at=datetime.now(UTC) - timedelta(minutes=1))


def test_the_kit_records_the_delay_of_a_follow_up() -> None:
    outcome = run_handler_sync(reminding, {})
    assert [p.delay for p in outcome.published] == [91, 0]


@handler("kit.bad-delay")
async def bad_delay(event: Event[object], ctx: Context) -> None:
    await ctx.publish("kit.reminder", {}, delay=-1)


def test_the_kit_refuses_a_negative_delay_as_the_worker_does() -> None:
    outcome = run_handler_sync(bad_delay, {})
    assert isinstance(outcome.error, InvalidInputError)
