"""Exact retry delays against the real broker: with delay levels, ``Retry(delay=7)`` waits 7 s
(not the 30 s tier), comes back to the failing handler only, and counts toward max_attempts."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import pytest

from eventworker import Context, Event, Publisher, Retry, envelope, handler
from eventworker.settings import RetrySettings, Settings
from eventworker.topology import delays
from tests.support.broker import Broker, running, wait_for
from tests.support.timing import TTL_EARLY

#: How late a retry may come back: a hop per level, the confirm and the worker's delivery.
LATE = 2.0


@pytest.fixture
def exact(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"delay_levels": 25, "retry": RetrySettings(max_attempts=3, delays=(5.0, 30.0))}
    )


async def test_a_retry_of_7_seconds_waits_7_not_the_tier_and_reaches_only_its_handler(
    broker: Broker, exact: Settings
) -> None:
    attempts: list[tuple[int, float]] = []
    others: list[str] = []

    @handler("order.placed", name="flaky")
    async def flaky(event: Event[Any], ctx: Context) -> None:
        attempts.append((event.attempt, time.monotonic()))
        if event.attempt == 1:
            raise Retry(delay=7)

    @handler("order.*", name="bystander")
    async def bystander(event: Event[Any], ctx: Context) -> None:
        others.append(event.id)

    async with (
        running(broker, [flaky, bystander], exact),
        Publisher.connect(exact.url, exchange=exact.exchange, delay_levels=25) as publisher,
    ):
        event_id = (await publisher.publish("order.placed", {"n": 1})).event_id
        await wait_for(lambda: len(attempts) == 2, 20)
        await wait_for(lambda: others == [event_id], 5)
        for tier in (5, 30):
            assert await broker.count(f"{exact.queue_prefix}retry.{tier}s") == 0
    [(first, failed), (second, retried)] = attempts
    assert (first, second) == (1, 2)  # the attempt counted across the levels
    waited = retried - failed
    assert 7 - TTL_EARLY <= waited <= 7 + LATE, waited  # not the 30 s tier, not 5 s
    assert others == [event_id]  # the bystander got the event once, not the retry


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_exact_retries_still_end_at_max_attempts(
    broker: Broker, exact: Settings, queue_type: str
) -> None:
    exact = exact.model_copy(update={"queue_type": queue_type})
    attempts: list[int] = []

    @handler("order.placed", name="stubborn")
    async def stubborn(event: Event[Any], ctx: Context) -> None:
        attempts.append(event.attempt)
        raise Retry(delay=1)

    async with (
        running(broker, [stubborn], exact) as worker,
        Publisher.connect(exact.url, exchange=exact.exchange, delay_levels=25) as publisher,
    ):
        await publisher.publish("order.placed", {"n": 1})
        dead = worker.routes[0].dead_letter_queue
        await broker.wait_count(dead, 1, timeout=20)
    assert attempts == [1, 2, 3]


async def test_a_forged_attempt_on_a_delayed_event_is_not_trusted(
    broker: Broker, exact: Settings
) -> None:
    """A delayed event waited in the levels too, but its routing key is digits, not
    ``return``: the attempt header a foreign producer set does not count."""
    attempts: list[int] = []

    @handler("order.placed", name="counted")
    async def counted(event: Event[Any], ctx: Context) -> None:
        attempts.append(event.attempt)

    async with running(broker, [counted], exact):
        channel = await broker.connection.channel()
        level = await channel.get_exchange(delays.level_name(exact.exchange, 0), ensure=False)
        forged = {
            envelope.ATTEMPT: 3,
            envelope.ROUTING_KEY: "order.placed",
            envelope.RETURN_TO: f"{exact.queue_prefix}counted",
        }
        message = aio_pika.Message(b"{}", headers=forged, type="order.placed")
        await level.publish(message, delays.routing_key(1, "order.placed", 25))
        await channel.close()
        await wait_for(lambda: attempts, 10)
    assert attempts == [1]
