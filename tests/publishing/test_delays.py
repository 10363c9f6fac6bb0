"""Broker-held delays against the real broker: on time, through several levels, to every handler
bound to the routing key, from the library publisher and from a handler."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from eventworker import Context, Event, NewEvent, Publisher, handler
from eventworker.errors import InvalidInputError
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.timing import TTL_EARLY

#: How late a delayed event may arrive: a hop per level and the worker's own delivery.
LATE = 1.5


@pytest.fixture
def delayed(settings: Settings) -> Settings:
    return settings.model_copy(update={"delay_levels": 28})


class Arrivals:
    """Per handler, per event id: when it arrived (monotonic) and the event."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, tuple[float, Event[Any]]]] = {}

    def add(self, name: str, event: Event[Any]) -> None:
        self.seen.setdefault(name, {})[event.id] = (time.monotonic(), event)

    def count(self, name: str) -> int:
        return len(self.seen.get(name, {}))


def two_handlers(arrivals: Arrivals, key: str) -> list[Any]:
    @handler(key, name="first")
    async def first(event: Event[Any], ctx: Context) -> None:
        arrivals.add("first", event)

    @handler("#", name="second")
    async def second(event: Event[Any], ctx: Context) -> None:
        arrivals.add("second", event)

    return [first, second]


def options(settings: Settings) -> dict[str, Any]:
    return {
        "exchange": settings.exchange,
        "timeout": 5.0,
        "delay_levels": settings.delay_levels,
    }


async def timed_publish(
    publisher: Publisher, key: str, event_id: str, **when: Any
) -> tuple[float, float]:
    before = time.monotonic()
    await publisher.publish(key, {"id": event_id}, id=event_id, **when)
    return before, time.monotonic()


def assert_on_time(
    arrived: float, sent: tuple[float, float], delay: float, *, slack: float = LATE
) -> None:
    before, confirmed = sent
    # The broker started holding it between the two: never earlier than asked, from the
    # confirm; at most ``slack`` late, from the call.
    assert arrived - confirmed >= delay - TTL_EARLY, arrived - confirmed
    assert arrived - before <= delay + slack, arrived - before


async def test_delays_of_1_and_7_seconds_reach_every_handler_on_time(
    broker: Broker, delayed: Settings
) -> None:
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.placed"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        one, seven = await asyncio.gather(
            timed_publish(publisher, "order.placed", "one", delay=1),
            timed_publish(publisher, "order.placed", "seven", delay=timedelta(seconds=7)),
        )
        await wait_for(lambda: arrivals.count("first") == 2 and arrivals.count("second") == 2, 15)
    for name in ("first", "second"):
        seen = arrivals.seen[name]
        assert_on_time(seen["one"][0], one, 1)
        assert_on_time(seen["seven"][0], seven, 7)
        # The handler sees the key the event was published with, not the delay's digits.
        assert seen["seven"][1].type == "order.placed"
        assert seen["seven"][1].data == {"id": "seven"}


async def test_a_delay_of_5_seconds_waits_in_levels_2_and_0_and_skips_1(
    broker: Broker, delayed: Settings
) -> None:
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.*"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        sent = await timed_publish(publisher, "order.shipped", "five", delay=5)
        level_one = f"{delayed.exchange}.delay.1"
        await asyncio.sleep(2)
        assert await broker.count(f"{delayed.exchange}.delay.2") == 1
        await wait_for(lambda: arrivals.count("first") == 1 and arrivals.count("second") == 1, 10)
    arrived, event = arrivals.seen["first"]["five"]
    assert_on_time(arrived, sent, 5)
    assert event.type == "order.shipped"
    deaths = [d["queue"] for d in event.headers["x-death"]]
    assert deaths == [f"{delayed.exchange}.delay.0", f"{delayed.exchange}.delay.2"]
    assert level_one not in deaths


async def test_a_time_already_past_is_delivered_at_once(broker: Broker, delayed: Settings) -> None:
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.placed"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        past = datetime.now(UTC) - timedelta(hours=1)
        sent = await timed_publish(publisher, "order.placed", "past", at=past)
        await wait_for(lambda: arrivals.count("first") == 1 and arrivals.count("second") == 1, 5)
    arrived, event = arrivals.seen["first"]["past"]
    assert arrived - sent[0] < 0.5
    assert "x-death" not in event.headers


async def test_at_a_time_two_seconds_ahead(broker: Broker, delayed: Settings) -> None:
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.placed"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        at = datetime.now(UTC) + timedelta(seconds=2)
        sent = await timed_publish(publisher, "order.placed", "soon", at=at)
        await wait_for(lambda: arrivals.count("first") == 1, 10)
    arrived = arrivals.seen["first"]["soon"][0]
    # ``at`` is rounded up to whole seconds from the call: at least the time left then.
    assert arrived - sent[0] >= 2 - TTL_EARLY
    assert arrived - sent[0] <= 3 + LATE


async def test_a_handler_publishes_a_delayed_follow_up(broker: Broker, delayed: Settings) -> None:
    arrivals = Arrivals()

    @handler("order.placed", name="placer")
    async def placer(event: Event[Any], ctx: Context) -> None:
        arrivals.add("placer", event)
        await ctx.publish("order.remind", {"of": event.id}, delay=2)

    @handler("order.remind", name="reminder")
    async def reminder(event: Event[Any], ctx: Context) -> None:
        arrivals.add("reminder", event)

    async with (
        running(broker, [placer, reminder], delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        await publisher.publish("order.placed", {}, id="o1")
        await wait_for(lambda: arrivals.count("reminder") == 1, 10)
    placed = arrivals.seen["placer"]["o1"][0]
    [(reminded, event)] = arrivals.seen["reminder"].values()
    assert 2 - TTL_EARLY <= reminded - placed <= 2 + LATE
    assert event.causation_id == "o1"
    assert event.type == "order.remind"


async def test_publish_many_holds_each_event_its_own_delay(
    broker: Broker, delayed: Settings
) -> None:
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.placed"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        before = time.monotonic()
        results = await publisher.publish_many(
            [
                NewEvent("order.placed", {}, id="now"),
                NewEvent("order.placed", {}, id="two", delay=2),
            ]
        )
        confirmed = time.monotonic()
        assert all(r.ok for r in results)
        await wait_for(lambda: arrivals.count("first") == 2, 10)
    seen = arrivals.seen["first"]
    assert seen["now"][0] - before < 1
    assert_on_time(seen["two"][0], (before, confirmed), 2)


async def test_a_bad_delay_is_refused_before_sending(broker: Broker, delayed: Settings) -> None:
    await broker.declare(*two_handlers(Arrivals(), "order.placed"), settings=delayed)
    async with Publisher.connect(delayed.url, **options(delayed)) as publisher:
        with pytest.raises(InvalidInputError, match="negative"):
            await publisher.publish("order.placed", {}, delay=-1)
        with pytest.raises(InvalidInputError, match="not both"):
            await publisher.publish("order.placed", {}, delay=1, at=datetime.now(UTC))
        with pytest.raises(InvalidInputError, match="longer than 28 levels"):
            await publisher.publish("order.placed", {}, delay=2**28)
        with pytest.raises(InvalidInputError, match="event 1"):
            await publisher.publish_many(
                [NewEvent("order.placed", {}), NewEvent("order.placed", {}, delay=-5)]
            )
    async with Publisher.connect(delayed.url, exchange=delayed.exchange) as off:
        with pytest.raises(InvalidInputError, match="delay_levels"):
            await off.publish("order.placed", {}, delay=5)
    assert await broker.count(f"{delayed.exchange}.delay.0") == 0
    assert await broker.count(f"{delayed.queue_prefix}first") == 0


async def one_delayed(broker: Broker, delayed: Settings, delay: int) -> Event[Any]:
    """Publish one event ``delay`` s ahead to two handlers; check both got it on time."""
    arrivals = Arrivals()
    async with (
        running(broker, two_handlers(arrivals, "order.placed"), delayed),
        Publisher.connect(delayed.url, **options(delayed)) as publisher,
    ):
        sent = await timed_publish(publisher, "order.placed", "late", delay=delay)
        both = lambda: arrivals.count("first") == 1 and arrivals.count("second") == 1  # noqa: E731
        await wait_for(both, delay + 20)
    for name in ("first", "second"):
        assert_on_time(arrivals.seen[name]["late"][0], sent, delay)
    return arrivals.seen["first"]["late"][1]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_delay_of_65_seconds(broker: Broker, delayed: Settings) -> None:
    await one_delayed(broker, delayed, 65)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_delay_through_many_levels(broker: Broker, delayed: Settings) -> None:
    """171 s = 10101011 in binary: waits in levels 7, 5, 3, 1 and 0, passes 6, 4 and 2."""
    event = await one_delayed(broker, delayed, 171)
    waited = {d["queue"] for d in event.headers["x-death"]}  # one entry per queue left
    assert waited == {f"{delayed.exchange}.delay.{k}" for k in (0, 1, 3, 5, 7)}


async def test_held_events_survive_a_worker_restart(broker: Broker, delayed: Settings) -> None:
    """One falls due while no worker runs (delivered when one is back), one after."""
    arrivals = Arrivals()
    await broker.declare(*two_handlers(arrivals, "order.placed"), settings=delayed)
    async with Publisher.connect(delayed.url, **options(delayed)) as publisher:
        async with running(broker, two_handlers(arrivals, "order.placed"), delayed):
            early = await timed_publish(publisher, "order.placed", "early", delay=2)
            later = await timed_publish(publisher, "order.placed", "later", delay=7)
        stopped = time.monotonic()
        await asyncio.sleep(4)  # the early one falls due meanwhile, into the work queues
        assert arrivals.count("first") == 0
        assert await broker.count(f"{delayed.queue_prefix}first") == 1
        back = time.monotonic()
        async with running(broker, two_handlers(arrivals, "order.placed"), delayed):
            await wait_for(
                lambda: arrivals.count("first") == 2 and arrivals.count("second") == 2, 15
            )
    assert stopped < early[0] + 2  # the worker was stopped before it fell due
    for name in ("first", "second"):
        assert back <= arrivals.seen[name]["early"][0]  # kept, then handled by the new worker
        assert_on_time(arrivals.seen[name]["later"][0], later, 7)


#: The delay that falls due after the private node is back, and the time a restarted node may
#: take to recover its queues before it expires what fell due while it was down.
LONG = 30
RECOVERY = 3.0


async def test_held_events_survive_a_broker_killed_and_restarted() -> None:
    from eventworker.plugins.resolved import topology_plan
    from eventworker.settings import load_settings
    from eventworker.topology import declare
    from eventworker.worker.lifecycle import Worker
    from tests.support.broker import registrations
    from tests.support.private_node import private_node

    @handler("order.placed", name="held")
    async def held(event: Event[Any], ctx: Context) -> None:
        pass

    with private_node(plugins=()) as node:
        settings = load_settings(url=node.url, exchange="dl.x", queue_prefix="dl.", delay_levels=25)
        worker = Worker(registrations(held), settings)
        plan = topology_plan(worker.routes, settings)
        connection = await aio_pika.connect(node.url)
        await declare.apply(plan, connection)
        await connection.close()
        async with Publisher.connect(node.url, **options(settings)) as publisher:
            # 2 s falls due while the node is down; 30 s after it is back (a restart takes
            # 5 to 20 s, more on a loaded machine).
            short = await timed_publish(publisher, "order.placed", "short", delay=2)
            long = await timed_publish(publisher, "order.placed", "long", delay=LONG)
        node.kill9()
        await asyncio.sleep(3)
        node.restart()
        back = time.monotonic()
        arrived: dict[str, float] = {}
        connection = await aio_pika.connect(node.url)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(worker.routes[0].queue, ensure=False)
            deadline = time.monotonic() + LONG + 30
            while len(arrived) < 2 and time.monotonic() < deadline:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                arrived[message.message_id or ""] = time.monotonic()
        finally:
            await connection.close()
    assert set(arrived) == {"short", "long"}
    # Due during the outage: out as soon as the node is back. The broker's clock kept
    # running meanwhile, so the other one is on time, not late by the outage.
    assert arrived["short"] - short[1] >= 2 - TTL_EARLY
    # The restarted node recovers the level queue before it expires what is due.
    assert arrived["short"] <= back + RECOVERY
    assert back < long[0] + LONG - RECOVERY, "the node came back too late for the check"
    assert_on_time(arrived["long"], long, LONG)
