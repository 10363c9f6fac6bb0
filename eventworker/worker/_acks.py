"""Coalesced acks for one consuming channel: one ``basic.ack(multiple=True)`` per batch.

An awaited ack per message costs about a third of a consumer's CPU (each frame is written and
drained on its own). Here a finished handling only marks its delivery tag done; a single writer
task acks the longest contiguous run of done tags from the oldest outstanding one with
``multiple=True``, without waiting for the socket drain. The writer starts ``ACK_DELAY`` after
the first tag of a batch is marked, or at once when a quarter of the prefetch is waiting (so
the broker never runs out of prefetch to deliver). Measured on a no-op handler: flushing once
per event-loop iteration wrote one ack per ~3 messages (a handler's concurrency bounds how many
finish together); 3 ms wrote one per ~40 and cut a quarter of the worker's CPU per message.
The rules that keep this at-least-once:

- **A tag whose handling is not finished stops the run.** A multiple ack never reaches past it,
  so a slow, cancelled (drain) or crashed handling is never acked by a later one's ack; closing
  the channel hands it back to the broker.
- **A nack or a reject goes out at once, and its tag leaves the window only once its frame is
  queued.** The broker forgets such a tag, so a later multiple ack whose range spans it does
  not touch it (and frames of one channel are written in order).
- **The tag a multiple ack names is always one still unacked**, never 0 ("all") and never one
  acked on its own before: the broker closes the channel for an unknown tag.
- **One writer at a time**, so acks are written in tag order even when the frame buffer is full.
- **Tags are per channel.** A closed channel drops every pending ack (the broker requeues its
  deliveries); one ``Acks`` serves exactly one channel and is never moved to another.

A slow handling at the head must not hold finished ones behind it unacked for long (they hold
prefetch slots and would be redelivered after a crash): once ``HOLD`` seconds pass, or half the
prefetch is done behind it, those are acked one by one (``multiple=False``).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque

import aiormq.abc
from loguru import logger

from eventworker.amqp.connection import CHANNEL_GONE

#: How long the first finished delivery of a batch waits for others to share its ack. A
#: crash within it only redelivers what was handled (a duplicate, never a loss).
ACK_DELAY = 0.003
#: Longest time a finished delivery waits behind an unfinished older one before it is acked on
#: its own.
HOLD = 0.1


class Acks:
    """The acks of one channel. ``delivered`` every tag in arrival order, then ``ack`` each
    finished one (or ``await nack``); ``await flush()`` before closing the channel."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, *, prefetch: int) -> None:
        self._channel = channel
        #: Tags delivered and not yet settled with the broker, oldest first.
        self._outstanding: deque[int] = deque()
        #: Finished tags waiting for their ack.
        self._done: set[int] = set()
        #: Tags settled on their own (nacked, or acked behind a slow one) still in the deque.
        self._gone: set[int] = set()
        self._release_at = max(prefetch // 2, 1)
        self._batch = max(prefetch // 4, 1)
        self._writer: asyncio.Task[None] | None = None
        self._delay: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._release = False

    @property
    def pending(self) -> int:
        """Finished deliveries whose ack is not written yet."""
        return len(self._done)

    def delivered(self, tag: int) -> None:
        outstanding = self._outstanding
        if not outstanding or tag > outstanding[-1]:
            outstanding.append(tag)
        else:  # never expected (the broker numbers a channel's deliveries in order): stay exact
            bisect.insort(outstanding, tag)

    def ack(self, tag: int) -> None:
        """Mark ``tag``'s handling finished; its ack is written within ``ACK_DELAY``."""
        done = self._done
        done.add(tag)
        if self._writer is not None:
            return  # the running writer takes it too
        if len(done) >= self._batch:
            self._start()
        elif self._delay is None:
            self._delay = asyncio.get_running_loop().call_later(ACK_DELAY, self._start)

    async def nack(self, tag: int, *, requeue: bool) -> None:
        """Hand ``tag`` back (or drop it) now. Raises what the channel raises when it is gone."""
        await self._channel.basic_nack(tag, requeue=requeue)
        self._settled(tag)

    async def reject(self, tag: int) -> None:
        """Reject ``tag`` now without requeueing: the queue's dead-letter exchange takes it as
        the broker holds it. Raises what the channel raises when it is gone."""
        await self._channel.basic_reject(tag, requeue=False)
        self._settled(tag)

    def _settled(self, tag: int) -> None:
        self._gone.add(tag)
        if self._done:
            self._start()

    async def flush(self) -> None:
        """Write every ack that can be written (before closing the channel, at drain): finished
        deliveries behind an unfinished one are acked on their own."""
        self._release = True
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._done:
            self._start()
            assert self._writer is not None
            await asyncio.shield(self._writer)

    def _start(self) -> None:
        """Start the writer now (the batch is full, or its delay is over)."""
        if self._delay is not None:
            self._delay.cancel()
            self._delay = None
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def _run(self) -> int | None:
        """Pop the contiguous settled run at the head; the newest finished tag in it, if any."""
        outstanding, done, gone = self._outstanding, self._done, self._gone
        last = None
        while outstanding:
            head = outstanding[0]
            if head in done:
                done.discard(head)
                last = head
            elif head in gone:
                gone.discard(head)
            else:
                break
            outstanding.popleft()
        return last

    async def _write(self) -> None:
        channel = self._channel
        try:
            while True:
                if channel.is_closed:
                    self._drop()
                    return
                last = self._run()
                if last is not None:
                    await channel.basic_ack(last, multiple=True, wait=False)
                    continue
                if not self._done:
                    return
                # Finished ones wait behind an unfinished older delivery.
                if self._release or len(self._done) >= self._release_at:
                    await self._ack_each()
                    continue
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(HOLD, self._on_hold)
                return
        except CHANNEL_GONE as exc:
            if self._done:
                logger.info(
                    "{} ack(s) not sent: channel closed ({}); the broker redelivers them",
                    len(self._done),
                    exc,
                )
            self._drop()
        finally:
            self._writer = None

    async def _ack_each(self) -> None:
        self._release = False
        for tag in sorted(self._done):
            await self._channel.basic_ack(tag, multiple=False, wait=False)
            self._done.discard(tag)
            self._gone.add(tag)

    def _on_hold(self) -> None:
        self._timer = None
        if self._done:
            self._release = True
            self._start()

    def _drop(self) -> None:
        self._outstanding.clear()
        self._done.clear()
        self._gone.clear()
        for timer in (self._timer, self._delay):
            if timer is not None:
                timer.cancel()
        self._timer = self._delay = None
