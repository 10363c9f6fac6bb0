"""The byte budget of a worker's handlings: how many bytes of message bodies they hold at once.

Prefetch counts messages, not bytes: a handler with prefetch 32 may be handed 32 bodies of
50 MB, and each one decoded doubles (or more) what it holds. A delivery takes its body's size
from the budget before its handling starts and gives it back once the handling has settled
it; a delivery that would take the held total past the limit waits. A body larger than the
whole budget is admitted when nothing else is held, so it runs alone and never waits forever.

Waiters are admitted strictly in arrival order (a queue of futures, as asyncio's own
``Semaphore`` keeps): a large body is never overtaken indefinitely by small ones behind it,
and a handler's deliveries enter it in the order they came. Giving back is synchronous, so it
runs in any ``finally``, a cancelled handling's included; a ``Condition`` would need its lock,
an ``await``, to wake anyone.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ByteBudget:
    """At most ``limit`` bytes held at once, save one body alone that is larger than that.

    ``try_take(size)`` or ``await take(size)`` before a handling, ``give(size)`` after it.
    Waiting costs no polling: each waiter awaits a future that a ``give`` resolves.
    """

    __slots__ = ("_waiters", "held", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a byte budget needs a limit of at least 1 byte")
        self.limit = limit
        #: Bytes taken and not yet given back.
        self.held = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Deliveries waiting for room."""
        return len(self._waiters)

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes now if they fit and nobody waits ahead; False otherwise."""
        held = self.held
        if self._waiters or (held and held + size > self.limit):
            return False
        self.held = held + size
        return True

    async def take(self, size: int) -> None:
        """Take ``size`` bytes, waiting behind earlier waiters until they fit (or nothing is
        held). A cancelled wait takes nothing."""
        if self.try_take(size):
            return
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].cancelled():
                # Still queued, unless a give already dropped it as cancelled.
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._admit()  # it may have been the head that kept the others waiting
            else:
                self.give(size)  # admitted just before the cancel arrived
            raise

    def give(self, size: int) -> None:
        """Give back what a finished handling took; admits the waiters that now fit."""
        self.held -= size
        if self._waiters:
            self._admit()

    def _admit(self) -> None:
        waiters = self._waiters
        while waiters:
            size, future = waiters[0]
            if future.done():  # cancelled: its task has not run its except block yet
                waiters.popleft()
                continue
            if self.held and self.held + size > self.limit:
                return
            waiters.popleft()
            self.held += size
            future.set_result(None)
