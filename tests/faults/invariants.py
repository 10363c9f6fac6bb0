"""The invariants of the reliability guide (§6.3), each a check with a readable failure.

    INV-LOST        C - (S | D) is empty      nothing confirmed is lost
    INV-UNEXPECTED  (S | D) - P is empty      nothing appears from nowhere
    INV-ONCE        max(effects.count) = 1    the effect happened once per id
    INV-EXCL        S & D is empty            processed or dead-lettered, not both
    INV-DRAINED     work and retry queues hold 0 messages once stable; dead-lettering (dead-letter
                    queues and the unrouted queue) holds exactly the copies read into D, one
                    per id (twice allowed only where a test stops workers on purpose: the
                    original's ack lost after the copy's confirm, at-least-once)
    INV-ALIVE       the worker pid is unchanged unless killed on purpose; no unhandled errors

``dup`` and ``recovered`` are reported, not asserted, unless a test states a bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.faults.ledger import Ledger
from tests.faults.processes import unhandled_errors
from tests.support.control import QueueState

#: How long the queues must stay calm before INV-DRAINED is checked (the catalogue says 5 s;
#: Rig.drained waits 2 s and covers the rest of a quorum queue's tick with the ledger).
STABLE_SECONDS = 2.0
#: rabbitmqctl's counts of a quorum queue are refreshed this often (the queue's tick), so a
#: snapshot can be this old.
QUORUM_TICK = 5.5


def _sample(ids: Iterable[str], n: int = 10) -> str:
    shown = sorted(ids)
    more = f" (and {len(shown) - n} more)" if len(shown) > n else ""
    return ", ".join(shown[:n]) + more


def inv_lost(ledger: Ledger) -> None:
    confirmed, done = ledger.confirmed(), ledger.processed() | ledger.dead_lettered_ids()
    lost = confirmed - done
    assert not lost, (
        f"INV-LOST: {len(lost)} of {len(confirmed)} confirmed ids were neither processed nor "
        f"dead-lettered: {_sample(lost)}"
    )


def inv_unexpected(ledger: Ledger) -> None:
    strange = (ledger.processed() | ledger.dead_lettered_ids()) - ledger.attempted()
    assert not strange, (
        f"INV-UNEXPECTED: {len(strange)} ids were processed or dead-lettered but never published: "
        f"{_sample(strange)}"
    )


def inv_once(ledger: Ledger) -> None:
    twice = {i: n for i, n in ledger.effect_counts().items() if n != 1}
    assert not twice, (
        f"INV-ONCE: {len(twice)} ids had their effect more than once: "
        f"{_sample(f'{i} x{n}' for i, n in twice.items())}"
    )


def inv_excl(ledger: Ledger) -> None:
    both = ledger.processed() & ledger.dead_lettered_ids()
    assert not both, (
        f"INV-EXCL: {len(both)} ids were both processed and dead-lettered: {_sample(both)}"
    )


def is_dead_letter(queue: str, unrouted: str = "") -> bool:
    """A queue whose messages are D: a dead-letter queue, or the unrouted queue (named by
    the ``unrouted_queue`` setting; "" when off), which keeps what no binding matched."""
    return queue.endswith(".dead") or (bool(unrouted) and queue == unrouted)


def drained_problems(
    queues: Mapping[str, QueueState], dead_lettered: int | None, unrouted: str = ""
) -> list[str]:
    """Why ``queues`` (one test's, by prefix) are not drained; [] when they are. ``dead_lettered``
    is the number of dead-letter copies read into D, which the dead-letter queues must hold
    exactly (None: not checked)."""
    problems = [
        f"{q.name} holds {q.messages} ({q.ready} ready, {q.unacked} unacked)"
        for q in queues.values()
        if not is_dead_letter(q.name, unrouted) and q.messages
    ]
    in_dead_letter = sum(q.messages for q in queues.values() if is_dead_letter(q.name, unrouted))
    if dead_lettered is not None and in_dead_letter != dead_lettered:
        problems.append(
            f"dead-letter queues hold {in_dead_letter} messages, {dead_lettered} were read"
        )
    return problems


def inv_drained(
    queues: Mapping[str, QueueState],
    ledger: Ledger,
    unrouted: str = "",
    *,
    duplicate_dead_letters: bool = False,
) -> None:
    """``duplicate_dead_letters``: the test stops workers on purpose, so an id may have been
    dead-lettered twice (its original's ack lost after the copy's confirm)."""
    copies = len(ledger.dead_lettered_rows())
    problems = drained_problems(queues, dead_lettered=copies, unrouted=unrouted)
    twice = copies - len(ledger.dead_lettered_ids())
    if twice and not duplicate_dead_letters:
        problems.append(f"{twice} dead-letter copies of ids dead-lettered already")
    assert not problems, "INV-DRAINED: " + "; ".join(problems)


def inv_alive(logs: str, *, pids: list[int], expected_starts: int = 1) -> None:
    errors = unhandled_errors(logs)
    assert not errors, "INV-ALIVE: unhandled errors in the worker log:\n" + "\n".join(errors[:10])
    assert len(pids) == expected_starts, (
        f"INV-ALIVE: the worker was started {len(pids)} times, expected {expected_starts}"
    )


@dataclass(frozen=True, slots=True)
class Report:
    """Reported, not asserted (as Jepsen does), unless a test states a bound."""

    invocations: int
    distinct: int
    recovered: int

    @property
    def dup(self) -> int:
        return self.invocations - self.distinct

    def __str__(self) -> str:
        return (
            f"{self.invocations} invocations of {self.distinct} ids (dup {self.dup}), "
            f"recovered {self.recovered}"
        )


def report(ledger: Ledger) -> Report:
    calls = ledger.invocations()
    done = ledger.processed() | ledger.dead_lettered_ids()
    return Report(
        invocations=len(calls),
        distinct=len({c.id for c in calls}),
        recovered=len(ledger.unknown() & done),
    )
