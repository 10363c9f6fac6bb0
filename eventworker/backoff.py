"""Back-off: pauses that grow by a factor up to a longest one, for every retry loop.

The worker's reconnects, the publisher's, the supervisor's restarts, the outbox relay's database
reconnects and the inbox's waits on a claim held elsewhere all wait this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """``next()`` gives ``first``, then each pause ``factor`` times the last, at most
    ``longest``; ``reset()`` starts over (after a success)."""

    first: float
    longest: float
    factor: float = 2.0
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def peek(self) -> float:
        """The pause ``next()`` would give, without taking it."""
        return self._next

    def next(self) -> float:
        pause = self._next
        self._next = min(pause * self.factor, self.longest)
        return pause

    def reset(self) -> None:
        self._next = self.first
