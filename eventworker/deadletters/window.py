"""The replay window: copies published with their confirms in flight, originals acked in order.

A replay publishes each copy without waiting for its confirm, up to ``size`` at once, all on one
channel (so the copies reach their destination in the order read). Copies are gathered while
the reader has more messages ready and written together, in one socket write
(:meth:`ConfirmChannel.write`): a replay's cost is then the broker's, not a task, a lock and a
drained write per copy. An original is acked only once its copy is confirmed, oldest first: a
run of confirmed copies at the head of the window is acked with one ``basic.ack(multiple)``
when nothing held back lies before it. A copy the broker does not confirm leaves its original
held, to be handed back in its place; the first such refusal is kept in
:attr:`CopyWindow.error`, nothing more is written, and the caller stops sending.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from eventworker.amqp import publishes
from eventworker.amqp.delivery import Delivery
from eventworker.amqp.properties import Properties
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.reader import QueueReader
from eventworker.errors import PublishError
from eventworker.publishing.channel import ConfirmChannel, PublishResult, Sent

#: Copies whose confirms may be in flight at once during a replay.
DEFAULT_WINDOW = 256
#: The largest window: a replay's consumer has twice the window as its prefetch, which AMQP
#: bounds at 65,535.
MAX_WINDOW = 32_767


class _Copy(NamedTuple):
    original: Delivery
    described: Letter
    message: publishes.Message


class CopyWindow:
    """Copies gathered, then in flight, in the order sent; :meth:`drain` writes what is
    gathered and waits for the last confirm."""

    def __init__(
        self,
        reader: QueueReader,
        publisher: ConfirmChannel,
        *,
        size: int,
        on_move: Callable[[Letter], None],
    ) -> None:
        self._reader = reader
        self._publisher = publisher
        self._size = size
        self._on_move = on_move
        self._gathered: list[_Copy] = []  # read, not written yet
        self._in_flight: deque[tuple[Sent, _Copy]] = deque()
        #: The originals whose copies were confirmed (and which were acked), in order.
        self.moved: list[Letter] = []
        #: The first copy the broker did not confirm (its original and the rest stay).
        self.error: PublishError | None = None

    @property
    def in_flight(self) -> int:
        """Copies sent (gathered or written) whose confirms have not been settled yet."""
        return len(self._gathered) + len(self._in_flight)

    async def send(
        self, original: Delivery, described: Letter, copy: Properties, routing_key: str
    ) -> None:
        """Publish ``copy`` of ``original``: gathered while the reader has more messages ready
        and the window has room, then written with the others."""
        message = self._publisher.copy_of(original.body, copy, routing_key)
        self._gathered.append(_Copy(original, described, message))
        if self._reader.ready() == 0 or self.in_flight >= self._size:
            await self._write()
        if self._in_flight and self._in_flight[0][0].confirm.done():
            await self._settle(wait=False)

    async def drain(self) -> None:
        """Write what is gathered; wait for every confirm in flight; ack each original whose
        copy was confirmed."""
        await self._write()
        while self._in_flight:
            await self._settle(wait=True)

    async def _write(self) -> None:
        """Write the gathered copies, as many at once as the window has room for."""
        while self._gathered and self.error is None:
            room = self._size - len(self._in_flight)
            if room <= 0:
                await self._settle(wait=True)
                continue
            batch, self._gathered = self._gathered[:room], self._gathered[room:]
            items = [
                (n, c.message.properties.message_id or "", c.message) for n, c in enumerate(batch)
            ]
            try:
                written, failed = await self._publisher.write(items)
            except BaseException:
                self._gathered = []  # not written: their originals are handed back
                raise
            for _, result in failed:  # the channel took none of the batch: each stays
                self._refused(result)
            self._in_flight.extend((sent, batch[sent.position]) for sent in written)
        if self.error is not None:
            self._gathered = []  # never written: their originals are handed back

    async def _settle(self, *, wait: bool) -> None:
        loop = asyncio.get_running_loop()
        if wait and self._in_flight:
            head = self._in_flight[0][0]
            if not head.confirm.done():
                await asyncio.wait((head.confirm,), timeout=max(head.deadline - loop.time(), 0))
        confirmed: list[_Copy] = []
        now = loop.time()
        while self._in_flight and (
            self._in_flight[0][0].confirm.done() or self._in_flight[0][0].deadline <= now
        ):
            sent, copy = self._in_flight.popleft()
            result = self._publisher.outcome(sent)
            if result.ok:
                confirmed.append(copy)
            else:
                self._refused(result)
        await self._moved(confirmed)

    def _refused(self, result: PublishResult) -> None:
        try:
            result.check(f"copy of {result.event_id} to {self._publisher.destination}")
        except PublishError as exc:
            self.error = self.error or exc

    async def _moved(self, confirmed: list[_Copy]) -> None:
        await self._reader.take_many([c.original for c in confirmed])
        for c in confirmed:
            self.moved.append(c.described)
            self._on_move(c.described)
