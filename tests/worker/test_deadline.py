"""The handler's deadline: cancels the handling when its time is up, tells that cancel from any
other, and leaves the task as it found it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from eventworker.worker._deadline import Deadline


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    deadline = Deadline(0.01)
    with pytest.raises(TimeoutError), deadline:
        await asyncio.Event().wait()
    assert deadline.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timer's cancel was taken back
    async with asyncio.timeout(0.01):  # so a later timeout in the same task still works
        await asyncio.sleep(0)


async def test_a_block_that_ends_in_time_is_not_cancelled_later() -> None:
    with Deadline(0.01) as deadline:
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # past the deadline: its timer was cancelled with the block
    assert not deadline.expired


async def test_without_a_limit_nothing_is_cancelled() -> None:
    with Deadline(None) as deadline:
        await asyncio.sleep(0.02)
    assert not deadline.expired


async def test_a_cancel_from_elsewhere_propagates_as_a_cancel() -> None:
    started = asyncio.Event()

    async def handling() -> None:
        with Deadline(60):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(handling())
    await started.wait()
    task.cancel()  # a drain or a shutdown
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_elsewhere_after_the_deadline_still_propagates() -> None:
    async def handling(deadline: Deadline) -> None:
        with deadline:
            with contextlib.suppress(asyncio.CancelledError):  # the handler swallows it
                await asyncio.Event().wait()
            current = asyncio.current_task()
            assert current is not None
            current.cancel()  # then another cancel request (a shutdown) comes in
            await asyncio.sleep(0)

    deadline = Deadline(0.01)
    task = asyncio.create_task(handling(deadline))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadline.expired


async def test_a_handler_that_swallows_the_cancel_ends_normally_and_uncancelled() -> None:
    with Deadline(0.01) as deadline, contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    assert deadline.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
