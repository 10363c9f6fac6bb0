"""The pure retry decision: what happens after an attempt, which tier, which policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from eventworker import Context, Event, Handler, HandlerTimeoutError, Reject, Retry, RetryPolicy
from eventworker import handler as handler_decorator
from eventworker.plugins.resolved import all_tiers, effective_policy
from eventworker.settings import RetrySettings, Settings, load_settings
from eventworker.worker.decisions import Ack, DeadLetter, RetryIn, decide, tier_for

POLICY = RetryPolicy(max_attempts=3, delays=(1, 10))
TIERS = (1.0, 10.0, 60.0)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EVENTWORKER_* variable and no ./eventworker.toml can leak into the settings."""
    for key in list(os.environ):
        if key.startswith("EVENTWORKER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _handler(name: str = "bill", retry: RetryPolicy | None = None) -> Handler:
    @handler_decorator("orders.created", name=name, retry=retry)
    async def func(event: Event[Any], ctx: Context) -> None: ...

    return func


# decide


def test_success_is_acked() -> None:
    assert decide(1, POLICY, None, tiers=TIERS) == Ack()


def test_success_on_the_last_attempt_is_still_acked() -> None:
    assert decide(3, POLICY, None, tiers=TIERS) == Ack()


@pytest.mark.parametrize("attempt", [1, 3])
def test_reject_dead_letters_at_once_whatever_the_attempt(attempt: int) -> None:
    assert decide(attempt, POLICY, Reject("negative total"), tiers=TIERS) == DeadLetter("rejected")


def test_retry_without_a_delay_waits_the_policy_delay() -> None:
    assert decide(2, POLICY, Retry(), tiers=TIERS) == RetryIn(10.0)


def test_retry_with_a_delay_waits_the_tier_for_that_delay() -> None:
    assert decide(1, POLICY, Retry(delay=7), tiers=TIERS) == RetryIn(10.0)


def test_retry_with_a_delay_matching_a_tier_waits_exactly_that_tier() -> None:
    assert decide(1, POLICY, Retry(delay=60), tiers=TIERS) == RetryIn(60.0)


def test_with_delay_levels_a_retry_delay_waits_exactly_in_the_levels() -> None:
    assert decide(1, POLICY, Retry(delay=7), tiers=TIERS, delay_levels=25) == RetryIn(7, True)
    assert decide(1, POLICY, Retry(delay=6.2), tiers=TIERS, delay_levels=25) == RetryIn(7, True)
    # A tier it names keeps its single hop; the policy's own delays are tiers.
    assert decide(1, POLICY, Retry(delay=10), tiers=TIERS, delay_levels=25) == RetryIn(10.0)
    assert decide(2, POLICY, RuntimeError("x"), tiers=TIERS, delay_levels=25) == RetryIn(10.0)
    assert decide(2, POLICY, Retry(), tiers=TIERS, delay_levels=25) == RetryIn(10.0)
    # Longer than a retry copy can wait in the levels (never the top one): the longest.
    longest = decide(1, POLICY, Retry(delay=2**30), tiers=TIERS, delay_levels=25)
    assert longest == RetryIn(2**24 - 1, True)
    # Still bounded by max_attempts.
    last = decide(3, POLICY, Retry(delay=7), tiers=TIERS, delay_levels=25)
    assert last == DeadLetter("retry_requested")


def test_retry_on_the_last_attempt_dead_letters_as_retry_requested() -> None:
    assert decide(3, POLICY, Retry(delay=1), tiers=TIERS) == DeadLetter("retry_requested")


def test_an_exception_with_attempts_left_is_retried_after_the_policy_delay() -> None:
    assert decide(1, POLICY, RuntimeError("boom"), tiers=TIERS) == RetryIn(1.0)
    assert decide(2, POLICY, RuntimeError("boom"), tiers=TIERS) == RetryIn(10.0)


def test_an_exception_on_the_last_attempt_dead_letters_as_exception() -> None:
    assert decide(3, POLICY, RuntimeError("boom"), tiers=TIERS) == DeadLetter("exception")


def test_an_attempt_beyond_max_attempts_dead_letters_too() -> None:
    assert decide(7, POLICY, RuntimeError("boom"), tiers=TIERS) == DeadLetter("exception")


@pytest.mark.parametrize("error", [HandlerTimeoutError("slow"), TimeoutError()])
def test_a_timeout_with_attempts_left_is_retried(error: BaseException) -> None:
    assert decide(1, POLICY, error, tiers=TIERS) == RetryIn(1.0)


@pytest.mark.parametrize("error", [HandlerTimeoutError("slow"), TimeoutError()])
def test_a_timeout_on_the_last_attempt_dead_letters_as_timeout(error: BaseException) -> None:
    assert decide(3, POLICY, error, tiers=TIERS) == DeadLetter("timeout")


def test_a_single_attempt_policy_dead_letters_the_first_failure() -> None:
    policy = RetryPolicy(max_attempts=1, delays=(1,))
    assert decide(1, policy, ValueError("x"), tiers=TIERS) == DeadLetter("exception")


def test_an_exception_listed_in_give_up_on_dead_letters_at_once() -> None:
    assert decide(1, POLICY, KeyError("k"), tiers=TIERS, give_up_on=(LookupError,)) == (
        DeadLetter("give_up")
    )


def test_an_exception_not_listed_in_give_up_on_is_retried() -> None:
    assert decide(1, POLICY, OSError("x"), tiers=TIERS, give_up_on=(LookupError,)) == RetryIn(1.0)


def test_with_retry_on_only_the_listed_exceptions_are_retried() -> None:
    assert decide(1, POLICY, ConnectionError("x"), tiers=TIERS, retry_on=(OSError,)) == (
        RetryIn(1.0)
    )
    assert decide(1, POLICY, ValueError("x"), tiers=TIERS, retry_on=(OSError,)) == (
        DeadLetter("give_up")
    )


def test_signals_are_not_subject_to_retry_on_or_give_up_on() -> None:
    everything = (BaseException,)
    assert decide(1, POLICY, Retry(), tiers=TIERS, give_up_on=everything) == RetryIn(1.0)
    assert decide(1, POLICY, Reject(), tiers=TIERS, retry_on=everything) == DeadLetter("rejected")


# tier_for


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0.5, 1.0), (1.0, 1.0), (1.5, 10.0), (10.0, 10.0), (59.9, 60.0), (60.0, 60.0)],
)
def test_tier_for_picks_the_shortest_tier_not_shorter_than_the_delay(
    delay: float, tier: float
) -> None:
    assert tier_for(delay, TIERS) == tier


@pytest.mark.parametrize("delay", [61.0, 3600.0])
def test_tier_for_a_delay_beyond_every_tier_picks_the_longest(delay: float) -> None:
    assert tier_for(delay, TIERS) == 60.0


# effective_policy


def test_the_handler_policy_beats_the_settings_default(clean_env: None) -> None:
    own = RetryPolicy(max_attempts=2, delays=(3,))
    settings = load_settings(retry=RetrySettings(max_attempts=9, delays=(9,)))
    assert effective_policy(_handler(retry=own), settings) == own


def test_the_settings_default_applies_to_a_handler_without_a_policy(clean_env: None) -> None:
    settings = load_settings(retry=RetrySettings(max_attempts=9, delays=(9, 90)))
    assert effective_policy(_handler(), settings) == RetryPolicy(max_attempts=9, delays=(9, 90))


def test_a_settings_override_beats_the_handler_policy(clean_env: None) -> None:
    settings = load_settings(retry_overrides={"bill": {"max_attempts": 7, "delays": [2, 4]}})
    own = RetryPolicy(max_attempts=2, delays=(3,))
    assert effective_policy(_handler(retry=own), settings) == RetryPolicy(
        max_attempts=7, delays=(2, 4)
    )


def test_a_settings_override_applies_only_to_the_handler_it_names(clean_env: None) -> None:
    settings = load_settings(retry_overrides={"other": {"max_attempts": 7}})
    own = RetryPolicy(max_attempts=2, delays=(3,))
    assert effective_policy(_handler(retry=own), settings) == own


def test_the_built_in_default_policy_matches_the_settings_default(clean_env: None) -> None:
    assert effective_policy(_handler(), Settings()) == RetryPolicy()


# all_tiers


def test_all_tiers_are_every_delay_of_every_policy_sorted_without_duplicates() -> None:
    policies = [
        RetryPolicy(delays=(60, 1, 10)),
        RetryPolicy(delays=(10, 1.5)),
        RetryPolicy(delays=(1,)),
    ]
    assert all_tiers(policies) == (1.0, 1.5, 10.0, 60.0)


def test_all_tiers_of_no_policy_is_empty() -> None:
    assert all_tiers([]) == ()
