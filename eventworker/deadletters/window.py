"""The replay window: copies published with their confirms in flight, originals acked in order.

A replay publishes each copy without waiting for its confirm, up to ``size`` at once, all on one
channel (so the copies reach their destination in the order read). An original is acked only
once its copy is confirmed, oldest first: a run of confirmed copies at the head of the window
is acked with one ``basic.ack(multiple)`` when nothing held back lies before it. A copy the
broker does not confirm leaves its original held, to be handed back in its place; the first such
refusal is kept in :attr:`CopyWindow.error` and the caller stops sending.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from eventworker.amqp.delivery import Delivery
from eventworker.amqp.properties import Properties
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.reader import QueueReader
from eventworker.errors import PublishError
from eventworker.publishing.channel import ConfirmChannel

#: Copies whose confirms may be in flight at once during a replay.
DEFAULT_WINDOW = 256
#: The largest window: a replay's consumer has twice the window as its prefetch, which AMQP
#: bounds at 65,535.
MAX_WINDOW = 32_767


@dataclass(frozen=True, slots=True)
class _InFlight:
    original: Delivery
    described: Letter
    sent: asyncio.Future[None]


class CopyWindow:
    """Copies in flight, in the order sent; :meth:`drain` waits for the last confirm."""

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
        self._in_flight: deque[_InFlight] = deque()
        #: The originals whose copies were confirmed (and which were acked), in order.
        self.moved: list[Letter] = []
        #: The first copy the broker did not confirm (its original and the rest stay).
        self.error: PublishError | None = None

    @property
    def in_flight(self) -> int:
        """Copies sent whose confirms have not been settled yet."""
        return len(self._in_flight)

    async def send(
        self, original: Delivery, described: Letter, copy: Properties, routing_key: str
    ) -> None:
        """Publish ``copy`` of ``original``; waits first while the window is full."""
        while len(self._in_flight) >= self._size:
            await self._settle(wait=True)
        sent = asyncio.ensure_future(self._publisher.send_copy(original.body, copy, routing_key))
        self._in_flight.append(_InFlight(original, described, sent))
        if self._in_flight[0].sent.done():
            await self._settle(wait=False)

    async def drain(self) -> None:
        """Wait for every confirm in flight; ack each original whose copy was confirmed."""
        while self._in_flight:
            await self._settle(wait=True)

    async def _settle(self, *, wait: bool) -> None:
        if wait:
            await asyncio.wait([self._in_flight[0].sent])
        confirmed: list[_InFlight] = []
        while self._in_flight and self._in_flight[0].sent.done():
            done = self._in_flight.popleft()
            failure = done.sent.exception()
            if failure is None:
                confirmed.append(done)
                continue
            if not isinstance(failure, PublishError):
                await self._moved(confirmed)
                raise failure
            self.error = self.error or failure
        await self._moved(confirmed)

    async def _moved(self, confirmed: list[_InFlight]) -> None:
        await self._reader.take_many([c.original for c in confirmed])
        for c in confirmed:
            self.moved.append(c.described)
            self._on_move(c.described)
