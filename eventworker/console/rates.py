"""Depth history kept in memory: the console's own polls, and the rates their deltas give.

Pure: the console polls the broker (passive declares) and records each depth here; a rate is the
change of a depth per minute over the window kept. A depth that is net change, not throughput:
a queue consumed as fast as it fills shows 0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class History:
    """Depths of every queue polled, at most ``window`` seconds back."""

    window: float
    _points: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def record(self, queue: str, at: float, depth: int | None) -> None:
        points = self._points.setdefault(queue, deque())
        if depth is None:
            points.clear()
            return
        points.append((at, depth))
        while points and points[0][0] < at - self.window:
            points.popleft()

    def per_minute(self, queue: str) -> float | None:
        """The change of the depth per minute over the window (None: fewer than two polls)."""
        points = self._points.get(queue)
        if not points or len(points) < 2:
            return None
        (t0, d0), (t1, d1) = points[0], points[-1]
        return (d1 - d0) * 60.0 / (t1 - t0) if t1 > t0 else None

    def growing(self, queue: str) -> bool:
        """True when the depth rose within the window: it is above its lowest point there
        (messages arrived since, whatever was taken out before)."""
        points = self._points.get(queue)
        if not points:
            return False
        return points[-1][1] > min(d for _, d in points)
