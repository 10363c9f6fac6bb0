"""How big each scenario is: the full profile (the reference figures) and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    #: Messages pre-published for a drain (the reference: 20,000 persistent ~300-byte messages).
    drain: int = 20_000
    #: Events per publish measurement; ``publish_await`` for the slow one-confirm-at-a-time case.
    publish: int = 20_000
    publish_await: int = 5_000
    #: The fixed, moderate rate of the latency scenario and how long it publishes.
    latency_rate: float = 500.0
    latency_seconds: float = 10.0
    #: The two backlogs of the memory scenario.
    backlog_small: int = 1_000
    backlog_large: int = 100_000
    #: Messages of the retry scenario (each fails once, then succeeds).
    retry: int = 5_000
    #: Events per measurement of the delay scenario (held by the broker, or not).
    delayed: int = 5_000
    #: Dead letters a replay moves (and events ``publish --file`` sends to compare).
    dlq: int = 100_000
    #: Consumer prefetch everywhere (the reference figures use 128).
    prefetch: int = 128
    #: Repetitions of every scenario, interleaved.
    runs: int = 3


FULL = Profile("full")
QUICK = Profile(
    "quick",
    drain=2_000,
    publish=2_000,
    publish_await=500,
    latency_seconds=2.0,
    backlog_small=500,
    backlog_large=5_000,
    retry=500,
    delayed=500,
    dlq=2_000,
    runs=1,
)
