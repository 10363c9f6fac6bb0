"""The pauses of every retry loop: growing by a factor up to the longest, starting over on reset."""

from __future__ import annotations

from eventworker.backoff import Backoff


def test_pauses_grow_by_the_factor_up_to_the_longest() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_peek_shows_the_next_pause_without_taking_it() -> None:
    backoff = Backoff(1.0, 10.0, factor=3.0)
    assert backoff.peek() == 1.0
    assert backoff.next() == 1.0
    assert backoff.peek() == backoff.next() == 3.0


def test_reset_starts_over_after_a_success() -> None:
    backoff = Backoff(0.2, 5.0)
    backoff.next(), backoff.next()
    backoff.reset()
    assert backoff.next() == 0.2
