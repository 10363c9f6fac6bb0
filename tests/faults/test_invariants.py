"""The invariant checks themselves: each fails, naming the ids, on a ledger that breaks it
(no broker needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults import invariants
from tests.faults.ledger import CONFIRMED, UNKNOWN, Ledger
from tests.support.control import QueueState


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


def published(ledger: Ledger, *ids: str, status: str = CONFIRMED) -> None:
    ledger.record_published((i, time.time(), status, "") for i in ids)


def dead_lettered(ledger: Ledger, *ids: str) -> None:
    ledger.record_dead_lettered((i, "exception", 3, "{}", "", "q.dead", "{}") for i in ids)


def test_a_confirmed_id_neither_processed_nor_dead_lettered_is_lost(ledger: Ledger) -> None:
    published(ledger, "a", "b", "c")
    ledger.apply_effect("a")
    dead_lettered(ledger, "b")
    with pytest.raises(AssertionError, match=r"INV-LOST: 1 of 3 confirmed .*: c"):
        invariants.inv_lost(ledger)
    published(ledger, "d", status=UNKNOWN)  # not confirmed: may be missing
    ledger.apply_effect("c")
    invariants.inv_lost(ledger)


def test_an_id_nobody_published_is_unexpected(ledger: Ledger) -> None:
    published(ledger, "a")
    ledger.apply_effect("a")
    ledger.apply_effect("ghost")
    with pytest.raises(AssertionError, match=r"INV-UNEXPECTED: 1 ids .*: ghost"):
        invariants.inv_unexpected(ledger)


def test_an_effect_twice_breaks_once_and_the_guard_prevents_it(ledger: Ledger) -> None:
    assert ledger.apply_effect("a") and not ledger.apply_effect("a")
    invariants.inv_once(ledger)
    ledger._db().execute("UPDATE effects SET count = 2 WHERE id = 'a'")
    with pytest.raises(AssertionError, match=r"INV-ONCE: 1 ids .*: a x2"):
        invariants.inv_once(ledger)


def test_an_id_processed_and_dead_lettered_breaks_exclusivity(ledger: Ledger) -> None:
    ledger.apply_effect("a")
    dead_lettered(ledger, "a")
    with pytest.raises(AssertionError, match=r"INV-EXCL: 1 ids .*: a"):
        invariants.inv_excl(ledger)


def state(name: str, ready: int = 0, unacked: int = 0) -> QueueState:
    return QueueState(name, ready + unacked, ready, unacked, 0, {}, "")


def test_drained_means_empty_work_and_retry_queues_and_dead_letter_equal_to_d(
    ledger: Ledger,
) -> None:
    dead_lettered(ledger, "a", "b")
    queues = {q.name: q for q in [state("p.h"), state("p.retry.1s"), state("p.h.dead", 2)]}
    invariants.inv_drained(queues, ledger)
    queues["p.h"] = state("p.h", unacked=1)
    with pytest.raises(AssertionError, match=r"INV-DRAINED: p.h holds 1 \(0 ready, 1 unacked\)"):
        invariants.inv_drained(queues, ledger)
    queues["p.h"] = state("p.h")
    queues["p.h.dead"] = state("p.h.dead", 3)  # a message the read did not see
    with pytest.raises(AssertionError, match=r"hold 3 messages, 2 were read"):
        invariants.inv_drained(queues, ledger)
    dead_lettered(ledger, "a", "b", "b")  # b dead-lettered twice
    with pytest.raises(AssertionError, match=r"1 dead-letter copies of ids dead-lettered already"):
        invariants.inv_drained(queues, ledger)
    invariants.inv_drained(queues, ledger, duplicate_dead_letters=True)  # a chaos test's case


def test_alive_means_one_start_and_no_unhandled_traceback() -> None:
    invariants.inv_alive("2026-01-01 00:00:00.000 INFO worker connected\n", pids=[1])
    with pytest.raises(AssertionError, match="started 2 times"):
        invariants.inv_alive("", pids=[1, 2])
    with pytest.raises(AssertionError, match="Task exception was never retrieved"):
        invariants.inv_alive("Task exception was never retrieved\n", pids=[1])
