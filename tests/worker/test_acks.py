"""Coalesced acks (eventworker/worker/_acks.py): never an ack for an unfinished delivery, never an
unknown tag, nothing left unacked once everything finished; against a model of the broker's
unacked set, then against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from pathlib import Path
from typing import Any, cast

import aiormq.abc
import pytest

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from eventworker.worker._acks import ACK_DELAY, HOLD, Acks
from tests.support.ack_worker import acky
from tests.support.broker import Broker, running, spawn_worker, wait_for
from tests.support.cli import env_for


class ModelChannel:
    """The broker's view of one channel: its unacked tags; a bad frame fails the test the way
    RabbitMQ closes the channel (PRECONDITION_FAILED, unknown delivery tag)."""

    is_closed = False

    def __init__(self) -> None:
        self.unacked: set[int] = set()
        self.acked: set[int] = set()
        self.nacked: set[int] = set()
        self.frames: list[tuple[str, int, bool]] = []

    def deliver(self, tag: int) -> None:
        self.unacked.add(tag)

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert tag in self.unacked, f"unknown delivery tag {tag}"
        self.frames.append(("ack", tag, multiple))
        covered = {t for t in self.unacked if t <= tag} if multiple else {tag}
        self.unacked -= covered
        self.acked |= covered

    async def basic_nack(
        self, tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        assert tag in self.unacked and not multiple
        self.frames.append(("nack", tag, requeue))
        self.unacked.discard(tag)
        self.nacked.add(tag)


def _acks(channel: ModelChannel, prefetch: int = 1000, delivered: int = 0) -> Acks:
    """Acks on ``channel`` with tags 1..``delivered`` delivered."""
    acks = Acks(cast(aiormq.abc.AbstractChannel, channel), prefetch=prefetch)
    for tag in range(1, delivered + 1):
        channel.deliver(tag)
        acks.delivered(tag)
    return acks


async def _settle() -> None:
    """Past the batch delay, and the writer's turns."""
    await asyncio.sleep(ACK_DELAY * 3)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_multiple_ack_covers_the_finished_run_of_a_batch() -> None:
    channel = ModelChannel()
    acks = _acks(channel, delivered=10)
    for tag in range(1, 11):
        acks.ack(tag)
    await _settle()
    assert channel.frames == [("ack", 10, True)]
    assert channel.acked == set(range(1, 11))


async def test_an_unfinished_delivery_stops_the_run_and_the_later_ones_wait_at_most_hold() -> None:
    channel = ModelChannel()
    acks = _acks(channel, delivered=5)
    for tag in (1, 3, 4, 5):  # 2 is slow
        acks.ack(tag)
    await _settle()
    assert channel.frames == [("ack", 1, True)]
    assert channel.unacked == {2, 3, 4, 5}
    await asyncio.sleep(HOLD * 2)
    # Released one by one, never with multiple=True (that would cover 2).
    assert channel.frames[1:] == [("ack", 3, False), ("ack", 4, False), ("ack", 5, False)]
    assert channel.unacked == {2}
    acks.ack(2)
    await _settle()
    assert channel.frames[-1] == ("ack", 2, True) and not channel.unacked


async def test_half_the_prefetch_finished_behind_a_slow_one_is_released_at_once() -> None:
    channel = ModelChannel()
    acks = _acks(channel, prefetch=8, delivered=8)
    for tag in range(2, 6):
        acks.ack(tag)
    await _settle()
    assert channel.unacked == {1, 6, 7, 8}


async def test_a_nacked_tag_is_settled_before_any_ack_spans_it() -> None:
    channel = ModelChannel()
    acks = _acks(channel, delivered=4)
    acks.ack(1)
    acks.ack(3)
    await acks.nack(2, requeue=True)
    acks.ack(4)
    await _settle()
    assert channel.nacked == {2} and channel.acked == {1, 3, 4}
    assert [f for f in channel.frames if f[0] == "nack"] == [("nack", 2, True)]


async def test_a_quarter_of_the_prefetch_finished_is_acked_without_the_delay() -> None:
    channel = ModelChannel()
    acks = _acks(channel, prefetch=16, delivered=4)
    for tag in range(1, 5):
        acks.ack(tag)
    for _ in range(3):  # the writer's turn, far less than the delay
        await asyncio.sleep(0)
    assert channel.frames == [("ack", 4, True)]


async def test_a_closed_channel_drops_its_acks() -> None:
    channel = ModelChannel()
    acks = _acks(channel, delivered=1)
    channel.is_closed = True
    acks.ack(1)
    await _settle()
    assert channel.frames == [] and acks.pending == 0


@pytest.mark.parametrize("seed", range(20))
async def test_random_completions_nacks_and_unfinished_ones_against_the_model(seed: int) -> None:
    rng = random.Random(seed)
    channel = ModelChannel()
    acks = _acks(channel, prefetch=rng.choice([2, 16, 128]))
    tags = list(range(1, 301))
    unfinished = set(rng.sample(tags, 5))
    nacked = set(rng.sample(sorted(set(tags) - unfinished), 5))

    async def one(tag: int) -> None:
        await asyncio.sleep(rng.random() * 0.01)
        if tag in nacked:
            await acks.nack(tag, requeue=True)
        elif tag not in unfinished:
            acks.ack(tag)

    batch: list[asyncio.Task[None]] = []
    for tag in tags:
        channel.deliver(tag)
        acks.delivered(tag)
        batch.append(asyncio.create_task(one(tag)))
        if rng.random() < 0.2:
            await asyncio.sleep(0)
    await asyncio.gather(*batch)
    await acks.flush()
    assert channel.unacked == unfinished
    assert channel.nacked == nacked
    assert channel.acked == set(tags) - unfinished - nacked


# -- the real broker -----------------------------------------------------------------------


async def test_out_of_order_completions_ack_every_message_exactly_once(
    broker: Broker, settings: Settings
) -> None:
    seen: list[str] = []

    @handler("ooo.event", concurrency=16)
    async def jittery(event: Event[Any], ctx: Context) -> None:
        await asyncio.sleep(random.random() * 0.005)
        seen.append(event.id)

    s = settings.model_copy(update={"prefetch": 64})
    async with running(broker, [jittery], s) as worker:
        queue = worker.routes[0].queue
        for n in range(600):
            await broker.publish("ooo.event", b"{}", message_id=f"m{n}")
        await wait_for(lambda: len(seen) >= 600, timeout=60)
    # No channel closed for an unknown tag (that would redeliver), nothing left unacked.
    assert worker.reconnects == 0
    assert sorted(seen) == sorted(f"m{n}" for n in range(600))
    assert await broker.count(queue) == 0


async def test_a_killed_worker_leaves_exactly_the_unfinished_delivery_for_redelivery(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    route = (await broker.declare(acky, settings=settings)).routes[0]
    log = tmp_path / "handled.log"
    log.touch()
    env = env_for(settings, EVENTWORKER_PREFETCH="64", ACK_LOG=str(log))
    process = await spawn_worker("tests.support.ack_worker", env)
    try:
        await broker.publish("acks.event", b"{}", message_id="warm-up")  # ends probation
        await _wait_file(log, {"warm-up"})
        # The hanging one takes the oldest delivery tag of the batch; the later ones finish.
        await broker.publish("acks.event", b'{"hang": true}', message_id="slow")
        fast = {f"f{n}" for n in range(40)}
        for event_id in sorted(fast):
            await broker.publish("acks.event", b"{}", message_id=event_id)
        await _wait_file(log, fast | {"warm-up"})
        await asyncio.sleep(HOLD * 5)  # their acks are out (held at most HOLD behind "slow")
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # Everything finished was acked despite the unfinished older one; it alone comes back.
        await wait_for_async(lambda: broker.count(route.queue), 1)
        back = await broker.take_all(route.queue, expect=1)
        assert [m.message_id for m in back] == ["slow"]
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()


def _handled(log: Path) -> set[str]:
    return set(log.read_text().split())


async def _wait_file(log: Path, ids: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= _handled(log):
        assert time.monotonic() < deadline, f"not handled: {sorted(ids - _handled(log))}"
        await asyncio.sleep(0.05)


async def wait_for_async(probe: Any, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while await probe() != expected:
        assert time.monotonic() < deadline, f"still {await probe()}, expected {expected}"
        await asyncio.sleep(0.05)
