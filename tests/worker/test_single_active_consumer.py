"""A single-active-consumer handler keeps its queue with one worker: order holds across workers."""

from __future__ import annotations

import asyncio
from typing import Any

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for


def ordered_handler(worker_name: str, order: list[tuple[str, int]]) -> Any:
    @handler("sac.#", name="ordered", single_active_consumer=True)
    async def ordered(event: Event[dict[str, int]], ctx: Context) -> None:
        order.append((worker_name, event.data["n"]))
        await asyncio.sleep(0)

    return ordered


async def test_the_active_worker_keeps_the_queue_and_the_order(
    broker: Broker, settings: Settings
) -> None:
    order: list[tuple[str, int]] = []
    async with (
        running(broker, [ordered_handler("w1", order)], settings) as first,
        running(broker, [ordered_handler("w2", order)], settings),
    ):
        for n in range(300):
            await broker.publish("sac.n", f'{{"n": {n}}}'.encode(), message_id=f"s{n}")
        await wait_for(lambda: len(order) == 300)
        # Ending probation would re-subscribe, and the broker would pass the queue on to the
        # waiting worker in the middle of the stream.
        assert {w for w, _ in order} == {"w1"}
        assert [n for _, n in order] == list(range(300))
        assert first.routes[0].prefetch == first.routes[0].concurrency == 1
