"""Choosing the cases, getting what they need, and measuring them interleaved: every
repetition measures every case once, in the same order (A B C A B C ...), so a machine that
grows busier during the run weighs on all of them alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from fnmatch import fnmatchcase

from benchmarks import environment, venvs
from benchmarks.harness import Bench, Case, Sample
from benchmarks.results import Outcome


class UnknownScenario(ValueError):
    pass


def select(cases: Sequence[Case], only: Sequence[str], *, peers: bool) -> list[Case]:
    """The cases ``only`` names (a group, a case id, or a glob such as ``drain.raw-*``), with
    the baseline of every group they belong to; peers only with ``peers``.

    Raises:
        UnknownScenario: a name matches no case.
    """
    for pattern in only:
        if not any(c.group == pattern or fnmatchcase(c.id, pattern) for c in cases):
            raise UnknownScenario(pattern)
    chosen = {
        c.id
        for c in cases
        if (not only or any(c.group == p or fnmatchcase(c.id, p) for p in only))
        and (peers or not c.peer)
    }
    groups = {c.group for c in cases if c.id in chosen}
    chosen |= {c.id for c in cases if c.baseline and c.group in groups}
    return [c for c in cases if c.id in chosen]


def prepare(cases: Sequence[Case], bench: Bench) -> list[Outcome]:
    """Set up the virtualenvs and detect the features the cases need; a case whose need is
    not met is skipped with the reason."""
    for name in sorted({c.venv for c in cases if c.venv}):
        bench.venvs[name] = venvs.ensure(name)
    bench.features.update(environment.features())
    outcomes = []
    for case in cases:
        outcome = Outcome(case)
        if case.venv and bench.venvs[case.venv].problem:
            outcome.skipped = bench.venvs[case.venv].problem
        elif case.feature and not bench.features.get(case.feature):
            outcome.skipped = environment.MISSING[case.feature]
        outcomes.append(outcome)
    return outcomes


async def measure(outcomes: Sequence[Outcome], bench: Bench, runs: int) -> None:
    """Measure every runnable case ``runs`` times, interleaved; cleans the broker after each."""
    runnable = [o for o in outcomes if not o.skipped]
    for run in range(runs):
        for outcome in runnable:
            bench.current = outcome.case.id
            started = time.monotonic()
            try:
                sample = await outcome.case.measure(bench)
            except Exception as exc:  # one broken case must not lose the others
                outcome.failures[run] = f"{type(exc).__name__}: {exc}"
                line = f"FAILED {outcome.failures[run]}"
            else:
                outcome.samples[run] = sample
                line = _figures(sample)
            finally:
                await bench.broker.cleanup()
            print(
                f"[{run + 1}/{runs}] {outcome.case.id:<28} {line} "
                f"({time.monotonic() - started:.1f}s)",
                file=sys.stderr,
                flush=True,
            )


def _figures(sample: Sample) -> str:
    return "  ".join(f"{key}={value:,.4g}" for key, value in sample.items())
