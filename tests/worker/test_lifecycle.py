"""The worker's lifecycle against the real broker: start, drain, conflicts, reconnection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventworker import Context, Event, handler
from eventworker.errors import BrokerUnreachableError, TopologyConflictError
from eventworker.settings import Settings
from eventworker.worker.lifecycle import State
from tests.support.broker import (
    Broker,
    _rabbitmqctl,
    close_worker_connections,
    needs_rabbitmqctl,
    running,
    wait_for,
)
from tests.support.queues import sink


async def test_stop_drains_running_handlers_and_hands_back_unstarted_ones(
    broker: Broker, settings: Settings
) -> None:
    started: list[str] = []
    finished: list[str] = []
    release = asyncio.Event()

    @handler("drain.event", concurrency=2)
    async def slow(event: Event[Any], ctx: Context) -> None:
        started.append(event.id)
        await release.wait()
        finished.append(event.id)

    s = settings.model_copy(update={"prefetch": 10})
    async with running(broker, [slow], s) as worker:
        queue = worker.routes[0].queue
        for n in range(6):
            await broker.publish("drain.event", b"{}", message_id=f"m{n}")
        await wait_for(lambda: len(started) == 2)
        worker.stop()
        await wait_for(lambda: worker.state is State.DRAINING)
        await asyncio.sleep(0.2)
        release.set()
    assert len(started) == 2, "no handler may start once draining began"
    assert sorted(finished) == sorted(started)
    # The two that ran were acked; the four prefetched but unstarted went back to the queue: a
    # moment after the worker's connection closed (the broker requeues them as it processes the
    # close, and a quorum queue through its log), so the count is polled, not read once.
    await broker.wait_count(queue, 4)
    assert await broker.count(f"{queue}.dead") == 0


async def test_handlers_still_running_after_the_grace_are_left_for_redelivery(
    broker: Broker, settings: Settings
) -> None:
    @handler("hang.event")
    async def hangs(event: Event[Any], ctx: Context) -> None:
        await asyncio.sleep(3600)

    s = settings.model_copy(update={"grace": 0.5})
    async with running(broker, [hangs], s) as worker:
        await broker.publish("hang.event", b"{}", message_id="h1")
        await wait_for(lambda: worker.in_flight == 1)
    queue = worker.routes[0].queue
    redelivered = await broker.take_all(queue, expect=1)
    assert [m.message_id for m in redelivered] == ["h1"]
    assert redelivered[0].redelivered
    assert "x-eventworker-attempt" not in (redelivered[0].headers or {})
    assert await broker.count(f"{queue}.dead") == 0


async def test_a_queue_declared_with_other_arguments_stops_start_up_naming_it(
    broker: Broker, settings: Settings
) -> None:
    @handler("conflict.event")
    async def conflicted(event: Event[Any], ctx: Context) -> None:
        pass

    queue = f"{settings.queue_prefix}conflicted"
    channel = await broker.connection.channel()
    await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
    await channel.close()
    with pytest.raises(TopologyConflictError) as caught:
        async with running(broker, [conflicted], settings):
            pass
    assert caught.value.queue == queue
    assert caught.value.argument.startswith("x-")
    assert queue in str(caught.value)


async def test_an_unreachable_broker_at_start_is_an_error_without_the_password(
    broker: Broker, settings: Settings
) -> None:
    @handler("never.event")
    async def never(event: Event[Any], ctx: Context) -> None:
        pass

    bad = settings.model_copy(
        update={"url": type(settings.url)("amqp://guest:CANARY-p4ss-7d2e@127.0.0.1:1/")}
    )
    with pytest.raises(BrokerUnreachableError) as caught:
        async with running(broker, [never], bad):
            pass
    assert "CANARY" not in str(caught.value)
    assert "guest:***@127.0.0.1:1" in str(caught.value)


async def _one_consumer(broker: Broker, queue: str) -> None:
    """The queue settles at one consumer: the first message after a (re)subscription runs while
    the consumer switches from probation to its prefetch (cancel, then consume again), and a
    quorum queue counts consumers through its log, a moment later."""
    for _ in range(100):
        if await broker.consumers(queue) == 1:
            return
        await asyncio.sleep(0.05)
    assert await broker.consumers(queue) == 1


@needs_rabbitmqctl
async def test_a_deleted_queue_is_declared_again_and_consumed(
    broker: Broker, settings: Settings
) -> None:
    seen: list[str] = []

    @handler("deleted.event")
    async def survivor(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    async with running(broker, [survivor], settings) as worker:
        queue = worker.routes[0].queue
        _rabbitmqctl("delete_queue", queue)
        await wait_for(lambda: worker.state is not State.RUNNING, timeout=10)
        await worker.wait_ready(20)
        await broker.publish("deleted.event", b"{}", message_id="after")
        await wait_for(lambda: seen == ["after"])
        await _one_consumer(broker, queue)


@needs_rabbitmqctl
async def test_a_closed_connection_is_reopened_and_consumers_restored(
    broker: Broker, settings: Settings
) -> None:
    seen: list[str] = []

    @handler("closed.event")
    async def survivor(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    async with running(broker, [survivor], settings) as worker:
        close_worker_connections()
        await wait_for(lambda: worker.reconnects == 1, timeout=20)
        await worker.wait_ready(20)
        await broker.publish("closed.event", b"{}", message_id="after")
        await wait_for(lambda: seen == ["after"])
        await _one_consumer(broker, worker.routes[0].queue)


async def test_the_watchdog_subscribes_again_when_a_consumer_vanished_silently(
    broker: Broker, settings: Settings
) -> None:
    seen: list[str] = []

    @handler("watched.event")
    async def watched(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    s = settings.model_copy(update={"watchdog_interval": 0.2})
    async with running(broker, [watched], s) as worker:
        queue = worker.routes[0].queue
        consumer = worker.consumers[0]
        # A client-side cancel raises no broker notice: only the watchdog can notice it.
        await consumer.queue.cancel(consumer.tag)
        assert await broker.consumers(queue) == 0
        await wait_for(lambda: worker.consumers and worker.consumers[0] is not consumer, 10)
        await broker.publish("watched.event", b"{}", message_id="after")
        await wait_for(lambda: seen == ["after"])
        await _one_consumer(broker, queue)


async def test_a_handler_timeout_not_below_the_brokers_consumer_timeout_is_warned_about(
    broker: Broker, settings: Settings, log_lines: list[str]
) -> None:
    @handler("patient.event", timeout=120)
    async def patient(event: Event[Any], ctx: Context) -> None:
        pass

    @handler("quick.event", timeout=5)
    async def quick(event: Event[Any], ctx: Context) -> None:
        pass

    s = settings.model_copy(update={"broker_consumer_timeout": 60.0})
    async with running(broker, [patient, quick], s):
        pass
    warnings = [line for line in log_lines if "consumer timeout" in line]
    assert len(warnings) == 1
    assert "handler patient" in warnings[0] and "120s" in warnings[0]


async def test_a_publishing_channel_the_broker_closed_is_replaced_by_a_new_session(
    broker: Broker, settings: Settings
) -> None:
    """A follow-up published to an exchange deleted under the worker makes the broker close the
    publishing channel (404) with the connection still up; retries and dead-lettering need it."""
    started: list[str] = []
    published: list[str] = []
    deleted = asyncio.Event()

    @handler("chain.#")
    async def chain(event: Event[Any], ctx: Context) -> None:
        started.append(event.id)
        await deleted.wait()
        await ctx.publish("chained.out", {"after": event.id})
        published.append(event.id)

    async with running(broker, [chain], settings) as worker:
        await broker.publish("chain.first", b"{}", message_id="first")
        await wait_for(lambda: started == ["first"])
        channel = await broker.connection.channel()
        await channel.exchange_delete(settings.exchange)
        await channel.close()
        deleted.set()  # the handler's publish now meets no exchange
        await wait_for(lambda: worker.reconnects == 1, timeout=20)
        await worker.wait_ready(20)  # the new session declared the exchange again
        out = await sink(broker, "chained.#", name="chained")
        await broker.publish("chain.next", b"{}", message_id="next")
        await wait_for(lambda: "next" in published, timeout=20)
        assert len(await broker.take_all(out, expect=1)) >= 1
        # "first" was not acked on the dead channel: the broker has it again (a retry copy, or
        # the original redelivered), nothing lost.
        await wait_for(lambda: started.count("first") >= 2, timeout=20)
