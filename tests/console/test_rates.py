"""Rates from the console's own polls: change per minute over the window, and growth."""

from __future__ import annotations

from eventworker.console.rates import History


def test_rates_are_the_change_per_minute_over_the_window_only() -> None:
    history = History(window=120)
    assert history.per_minute("q") is None
    history.record("q", 0, 10)
    history.record("q", 60, 40)
    assert history.per_minute("q") == 30.0
    history.record("q", 150, 40)  # the first point left the window
    assert history.per_minute("q") == 0.0


def test_a_depth_grows_when_it_rose_above_its_lowest_point_in_the_window() -> None:
    history = History(window=300)
    for at, depth in ((0, 3), (10, 1)):
        history.record("dead", at, depth)
    assert not history.growing("dead")  # only fell
    history.record("dead", 20, 2)
    assert history.growing("dead")
    history.record("dead", 30, None)  # the queue is gone: no history
    assert not history.growing("dead") and history.per_minute("dead") is None
