"""The pure retry decision: (attempt, policy, what the handler did) -> what happens next."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from eventworker.errors import HandlerTimeoutError, Reject, RejectedByMiddleware, Retry
from eventworker.handlers import RetryPolicy
from eventworker.topology import delays


@dataclass(frozen=True, slots=True)
class Ack:
    """The handler succeeded."""


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Send a copy to the retry tier of ``delay`` seconds, then ack the original; ``levels``:
    through the delay levels instead, which hold it exactly ``delay`` whole seconds."""

    delay: float
    levels: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Put a copy in the handler's dead-letter queue with ``reason``, then ack the original.

    Reasons: ``rejected``, ``rejected_by_middleware``, ``timeout``, ``exception`` and
    ``retry_requested`` (attempts spent), ``give_up`` (a ``give_up_on`` type, or one not in
    ``retry_on``), plus the envelope's ``too_large``, ``unsupported_content_type``,
    ``decode_error``, ``schema_error`` and ``no_handler``, and the inbox's
    ``idempotency_key_conflict``.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An idempotent handler handled this event already: acked unrun."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """Handed back to the queue unrun, no attempt consumed: the inbox did not admit the event.

    Reasons: ``claim_held`` (another worker held the event for longer than the inbox's
    ``wait``) and ``inbox_unavailable`` (the store failed for that long); on a classic queue,
    ``redelivered``: a worker stopped while holding it, so it was moved, counted, to the
    handler's probation queue to run alone.
    """

    reason: str


#: What happens to a delivery. ``decide`` returns the first three; the inbox of idempotent
#: handlers adds ``Duplicate`` (acked unrun) and ``Requeue`` (handed back unrun).
Decision = Ack | RetryIn | DeadLetter | Duplicate | Requeue


def decide(
    attempt: int,
    policy: RetryPolicy,
    error: BaseException | None,
    *,
    tiers: tuple[float, ...],
    retry_on: tuple[type[BaseException], ...] = (),
    give_up_on: tuple[type[BaseException], ...] = (),
    delay_levels: int = 0,
) -> Decision:
    """What happens after attempt ``attempt`` ended with ``error`` (None: success).

    With ``delay_levels``, a ``Retry(delay=...)`` that names no declared tier waits that delay
    exactly (whole seconds, rounded up) in the delay levels; the policy's own delays are
    tiers, declared exactly, and keep their one hop."""
    match error:
        case None:
            return Ack()
        case Reject():
            return DeadLetter("rejected")
        case RejectedByMiddleware():
            return DeadLetter("rejected_by_middleware")
        case Retry(delay=delay):
            if attempt >= policy.max_attempts:
                return DeadLetter("retry_requested")
            if delay and delay_levels and delay not in tiers:
                return exact(delay, delay_levels)
            return RetryIn(tier_for(delay or policy.delay_after(attempt), tiers))
    timed_out = isinstance(error, HandlerTimeoutError | asyncio.TimeoutError)
    reason = "timeout" if timed_out else "exception"
    # A timeout is retried even with retry_on set: it says nothing about the input.
    if isinstance(error, give_up_on) or (
        retry_on and not timed_out and not isinstance(error, retry_on)
    ):
        return DeadLetter("give_up")
    if attempt >= policy.max_attempts:
        return DeadLetter(reason)
    return RetryIn(tier_for(policy.delay_after(attempt), tiers))


def exact(delay: float, levels: int) -> RetryIn:
    """A retry held ``delay`` s (rounded up to whole seconds: never early) in ``levels``
    levels; a delay longer than a retry copy can wait there waits the longest it can."""
    return RetryIn(min(math.ceil(delay), delays.longest_retry(levels)), levels=True)


def tier_for(delay: float, tiers: tuple[float, ...]) -> float:
    """The declared retry tier for ``delay``: the shortest not shorter than it, else the longest.

    ``Retry(delay=7)`` with tiers 1, 10 and 60 waits 10 seconds; a delay longer than every
    tier waits the longest (retry queues are declared up front, one per delay).
    """
    for tier in tiers:
        if tier >= delay:
            return tier
    return tiers[-1]


class DeliveryLimitExceeded(Exception):
    """The diagnosis of a message dead-lettered because a worker stopped while handling it
    more often than ``delivery_limit`` allows (on a classic queue, counted by the worker)."""
