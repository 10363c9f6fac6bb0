"""The byte budget (``max_inflight_bytes``): how many bytes of bodies the handlings hold at once,
a body larger than the budget run alone, and a worker's memory after large bodies: bounded
while they pass, back near its baseline once they are settled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from eventworker.worker._budget import ByteBudget
from tests.support.broker import Broker, running, spawn_worker, wait_for
from tests.support.bytes_worker import sized
from tests.support.cli import env_for

MIB = 1024 * 1024


def padded(size: int, **fields: Any) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``fields`` and a ``pad`` string filling it."""
    head = orjson.dumps({**fields, "pad": ""})
    return head[:-2] + b"x" * (size - len(head)) + b'"}'


class Inside:
    """A handler that counts the handlings inside it and holds each until told."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.entered: list[str] = []
        self.finished: list[str] = []
        self.go: dict[str, asyncio.Event] = {}

    def release(self, event_id: str) -> None:
        self.go.setdefault(event_id, asyncio.Event()).set()

    def handler(self) -> Any:
        @handler("held.#", name="held")
        async def held(event: Event[Any], ctx: Context) -> None:
            self.now += 1
            self.most = max(self.most, self.now)
            self.entered.append(event.id)
            try:
                await self.go.setdefault(event.id, asyncio.Event()).wait()
            finally:
                self.now -= 1
            self.finished.append(event.id)

        return held


def _bounded(settings: Settings, budget: int, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "max_inflight_bytes": budget,
            "queue_type": "classic",
            "concurrency": 8,
            "prefetch": 8,
            **more,
        }
    )


async def test_handlings_hold_at_most_the_budget_and_enter_in_delivery_order(
    broker: Broker, settings: Settings
) -> None:
    inside = Inside()
    held = inside.handler()
    ids = [f"m{n}" for n in range(5)]
    async with running(broker, [held], _bounded(settings, 3_000_000)) as worker:
        assert worker.budget is not None
        for event_id in ids:
            await broker.publish("held.event", padded(1_000_000), message_id=event_id)
        # All five delivered (prefetch 8, concurrency 8): only the bytes hold two back.
        await wait_for(lambda: inside.now == 3 and worker.budget.waiting == 2)
        await asyncio.sleep(0.3)
        assert inside.now == 3 and inside.entered == ids[:3]
        assert worker.budget.held == 3_000_000
        inside.release("m1")
        await wait_for(lambda: inside.entered == ids[:4])
        assert inside.now == 3 and worker.budget.waiting == 1
        for event_id in ids:
            inside.release(event_id)
        await wait_for(lambda: len(inside.finished) == 5)
    assert inside.most == 3
    assert inside.entered == ids
    assert worker.budget.held == 0 and worker.budget.waiting == 0


async def test_a_body_larger_than_the_budget_runs_alone_and_is_not_overtaken(
    broker: Broker, settings: Settings
) -> None:
    inside = Inside()
    held = inside.handler()
    bounded = _bounded(settings, 1_000_000, max_body_bytes=4 * MIB)
    async with running(broker, [held], bounded) as worker:
        assert worker.budget is not None
        await broker.publish("held.event", padded(300_000), message_id="small-1")
        await broker.publish("held.event", padded(2_500_000), message_id="big")
        await broker.publish("held.event", padded(300_000), message_id="small-2")
        # small-2 would fit beside small-1, but it came after big, which waits for room.
        await wait_for(lambda: inside.entered == ["small-1"] and worker.budget.waiting == 2)
        inside.release("small-1")
        await wait_for(lambda: inside.entered == ["small-1", "big"])
        await asyncio.sleep(0.3)
        assert inside.now == 1 and worker.budget.waiting == 1, "big runs alone"
        assert worker.budget.held == 2_500_000
        inside.release("big")
        inside.release("small-2")
        await wait_for(lambda: len(inside.finished) == 3)
    assert inside.finished == ["small-1", "big", "small-2"]
    assert inside.most == 1


async def test_a_delivery_waiting_for_room_at_drain_goes_back_to_the_queue_unrun(
    broker: Broker, settings: Settings
) -> None:
    inside = Inside()
    held = inside.handler()
    async with running(broker, [held], _bounded(settings, 1_500_000)) as worker:
        assert worker.budget is not None
        queue = worker.routes[0].queue
        await broker.publish("held.event", padded(1_000_000), message_id="running")
        await broker.publish("held.event", padded(1_000_000), message_id="waiting")
        await wait_for(lambda: inside.entered == ["running"] and worker.budget.waiting == 1)
        worker.stop()
        await wait_for(lambda: worker.budget.waiting == 0)  # the drain cancelled its wait
        inside.release("running")
        inside.release("waiting")
    assert inside.entered == ["running"] and inside.finished == ["running"]
    assert worker.budget.held == 0
    await broker.wait_count(queue, 1)
    [back] = await broker.take_all(queue, expect=1)
    assert back.message_id == "waiting" and back.redelivered


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


async def _logged(log: Path, ids: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= {
        line.split()[0] for line in (await asyncio.to_thread(log.read_text)).split("\n") if line
    }:
        assert time.monotonic() < deadline, f"not all of {sorted(ids)} handled in time"
        await asyncio.sleep(0.05)


async def _settles_near(pid: int, baseline: int, margin: int, what: str) -> None:
    """RSS comes back within ``margin`` KiB of ``baseline`` within a few seconds."""
    deadline = time.monotonic() + 5
    while (rss := _kib(pid, "VmRSS")) > baseline + margin:
        assert time.monotonic() < deadline, (
            f"{what}: RSS {rss // 1024} MiB, baseline {baseline // 1024} MiB"
        )
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("body", "budget"),
    [
        pytest.param(8 * MIB, 10 * MIB, id="8MiB"),
        pytest.param(50 * MIB, 64 * MIB, id="50MiB"),
    ],
)
async def test_large_bodies_pass_in_bounded_memory_and_leave_nothing_behind(
    broker: Broker, settings: Settings, tmp_path: Path, body: int, budget: int
) -> None:
    """Four bodies with prefetch 2 and room for one: the worker holds at most the prefetch's
    two bodies delivered ahead and the decoded copy of the one being handled (3 bodies above
    its baseline; 5 without the budget, all four decoded at once). Afterwards, handled or
    dead-lettered (a body over max_body_bytes, a handler that gives up), RSS is back within
    16 MiB of its baseline."""
    prefetch = 2
    classic = settings.model_copy(update={"queue_type": "classic"})
    route = (await broker.declare(sized, settings=classic)).routes[0]
    log = tmp_path / "handled.log"
    log.touch()
    env = env_for(
        classic,
        EVENTWORKER_QUEUE_TYPE="classic",
        EVENTWORKER_PREFETCH=str(prefetch),
        EVENTWORKER_MAX_INFLIGHT_BYTES=str(budget),
        EVENTWORKER_MAX_BODY_BYTES=str(body),
        EVENTWORKER_LOG_LEVEL="WARNING",
        BYTES_LOG=str(log),
        BYTES_HOLD="0.5",
    )
    process = await spawn_worker("tests.support.bytes_worker", env)
    margin = 16 * 1024
    try:
        await broker.publish("bytes.event", b"{}", message_id="warm-up")  # ends probation
        await _logged(log, {"warm-up"})
        await asyncio.sleep(0.5)
        baseline = _kib(process.pid, "VmRSS")

        handled = [f"big{n}" for n in range(4)]
        await asyncio.gather(
            *(broker.publish("bytes.event", padded(body), message_id=i) for i in handled)
        )
        await _logged(log, set(handled))
        peak = _kib(process.pid, "VmHWM")
        bound = baseline + (prefetch + 1) * body // 1024 + margin
        print(f"baseline {baseline // 1024} MiB, peak {peak // 1024} MiB, bound {bound // 1024}")
        assert peak < bound, (
            f"peak {peak // 1024} MiB over {bound // 1024} MiB (baseline {baseline // 1024})"
        )
        await _settles_near(process.pid, baseline, margin, "after handling")

        # The dead-letter path: copies published, errors with tracebacks kept on the way.
        oversize = padded(body + 1024)
        await asyncio.gather(
            broker.publish("bytes.event", oversize, message_id="over-0"),
            broker.publish("bytes.event", oversize, message_id="over-1"),
            broker.publish("bytes.event", padded(body, fail=True), message_id="fail-0"),
            broker.publish("bytes.event", padded(body, fail=True), message_id="fail-1"),
        )
        del oversize
        await broker.wait_count(route.dead_letter_queue, 4, timeout=60)
        await _settles_near(process.pid, baseline, margin, "after dead-lettering")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()


async def test_a_cancelled_wait_takes_nothing_and_lets_the_next_one_in() -> None:
    budget = ByteBudget(10)
    assert budget.try_take(6)
    big = asyncio.ensure_future(budget.take(8))  # waits: 6 + 8 > 10
    small = asyncio.ensure_future(budget.take(3))  # fits, but waits behind big
    await asyncio.sleep(0)
    assert budget.waiting == 2 and not small.done()
    big.cancel()
    await asyncio.wait_for(small, 1)
    assert budget.held == 9 and budget.waiting == 0
    # Admitted, then cancelled before it ran: what it was given goes back.
    late = asyncio.ensure_future(budget.take(5))
    await asyncio.sleep(0)
    budget.give(9)
    late.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await late
    assert budget.held == 0 and budget.waiting == 0
