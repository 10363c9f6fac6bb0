"""The performance goals, as data, judged against a run: met, missed, or not measurable.

A goal relative to another case uses the ratio paired by repetition (both measured in the
same round); an absolute goal uses the median.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from benchmarks.results import Results
from benchmarks.scenarios import waiting


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    case: str
    metric: str
    #: Case ids to compare with (the best of them); empty for an absolute goal.
    reference: tuple[str, ...] = ()
    at_least: float | None = None
    at_most: float | None = None
    unit: str = "x"
    #: Computes the figure from the run (instead of a median or a paired ratio).
    figure: Callable[[Results], float | None] | None = None


def _waiting(concurrency: int) -> Goal:
    return Goal(
        f"Waiting 5 ms at concurrency {concurrency} ≥ 90% of the Little's-law bound (or of raw "
        "aio-pika's rate, where the CPU or the broker holds that lower)",
        waiting.case_id(concurrency, raw=False),
        "msgs_per_s",
        (waiting.case_id(concurrency, raw=True),),
        at_least=0.9,
        figure=partial(waiting.of_attainable, concurrency=concurrency),
    )


GOALS = (
    Goal("Drain ≥ 1.2x raw aio-pika acking each (wait=False)", "drain.eventworker",
         "msgs_per_s", ("drain.raw-nowait",), at_least=1.2),
    Goal("Drain ≥ 2x FastStream's best configuration", "drain.eventworker", "msgs_per_s",
         ("drain.faststream", "drain.faststream-quiet", "drain.faststream-bare"), at_least=2.0),
    Goal("Drain ≥ Dramatiq's default (2 processes x 8 threads)", "drain.eventworker",
         "msgs_per_s", ("drain.dramatiq-2x8",), at_least=1.0),
    Goal("Drain ≈ 75% of the uvloop no-ack ceiling", "drain.eventworker", "msgs_per_s",
         ("drain.raw-noack-uvloop",), at_least=0.75),
    Goal("--processes 2 ≥ raw aio-pika with 2 processes", "drain.eventworker-2proc",
         "msgs_per_s", ("drain.raw-2proc",), at_least=1.0),
    Goal("publish --file ≥ 2x aio-pika with 256 confirms in flight", "publish.eventworker-cli",
         "msgs_per_s", ("publish.raw-window256",), at_least=2.0),
    Goal("publish --file ≥ Dramatiq's unconfirmed rate", "publish.eventworker-cli",
         "msgs_per_s", ("publish.dramatiq",), at_least=1.0),
    Goal("dlq replay ≥ 5,000 messages/s", "dlq.eventworker-replay", "msgs_per_s",
         at_least=5000.0, unit=" msgs/s"),
    Goal("dlq replay ≥ 0.8x publish --file", "dlq.eventworker-replay", "msgs_per_s",
         ("dlq.publish-file",), at_least=0.8),
    Goal("Latency p99 ≤ 1.2x raw aio-pika's", "latency.eventworker", "p99_ms",
         ("latency.raw",), at_most=1.2),
    Goal("Worker RSS ≤ 1.25x raw aio-pika's", "memory.eventworker-small", "peak_rss_mb",
         ("memory.raw-small",), at_most=1.25),
    Goal("Worker RSS flat (± 10%) with the large backlog", "memory.eventworker-large",
         "peak_rss_mb", ("memory.eventworker-small",), at_least=0.9, at_most=1.1),
    Goal("eventworker --help ≤ 0.3 s", "startup.help", "seconds", at_most=0.3, unit=" s"),
    Goal("run consuming ≤ 1.5 s with 20 handlers", "startup.run-20", "seconds", at_most=1.5,
         unit=" s"),
    Goal("200 handlers declared ≤ 5 s", "startup.declare-200", "seconds", at_most=5.0,
         unit=" s"),
    Goal("Model + JSON logs + metrics ≤ 1.3x the no-op's CPU per message",
         "features.model-json-metrics", "cpu_us_per_msg", ("features.noop",), at_most=1.3),
    *(_waiting(c) for c in waiting.CONCURRENCIES),
)  # fmt: skip


def judge(goal: Goal, results: Results) -> dict[str, Any]:
    """The goal's figure and status: ``met``, ``missed``, ``not measurable yet`` (a case was
    skipped: a missing feature or peer) or ``not measured`` (not selected in this run)."""
    needed = (goal.case, *goal.reference)
    outcomes = [results.outcome(case_id) for case_id in needed]
    figure = _figure(goal, results)
    if figure is None:
        skipped = [o for o in outcomes if o is not None and o.skipped]
        if skipped:
            status, why = "not measurable yet", "; ".join(o.skipped for o in skipped)
        elif any(o is None or o.samples for o in outcomes):
            status, why = "not measured", "not selected in this run, or it failed"
        else:
            status, why = "not measured", "every measurement failed"
        return {"goal": goal.text, "status": status, "figure": None, "detail": why}
    met = (goal.at_least is None or figure >= goal.at_least) and (
        goal.at_most is None or figure <= goal.at_most
    )
    return {
        "goal": goal.text,
        "status": "met" if met else "missed",
        "figure": round(figure, 3),
        "detail": f"{figure:.2f}{goal.unit} (need {_bounds(goal)})",
    }


def _figure(goal: Goal, results: Results) -> float | None:
    if goal.figure is not None:
        return goal.figure(results)
    if not goal.reference:
        return results.median(goal.case, goal.metric)
    ratios = [results.ratio(goal.case, ref, goal.metric) for ref in goal.reference]
    known = [r for r in ratios if r is not None]
    if not known:
        return None
    # Against the best reference: the smallest ratio if higher is better, else the largest.
    return min(known) if goal.at_least is not None else max(known)


def _bounds(goal: Goal) -> str:
    if goal.at_least is not None and goal.at_most is not None:
        return f"{goal.at_least:g}-{goal.at_most:g}{goal.unit}"
    if goal.at_least is not None:
        return f"≥ {goal.at_least:g}{goal.unit}"
    return f"≤ {goal.at_most:g}{goal.unit}"


def judge_all(results: Results) -> list[dict[str, Any]]:
    return [judge(goal, results) for goal in GOALS]


@dataclass(frozen=True, slots=True)
class Difference:
    """A derived figure: ``case - reference`` (or ``case / reference`` with ``ratio``) for
    ``metric``, paired by repetition."""

    text: str
    case: str
    reference: str
    metric: str
    unit: str
    ratio: bool = False


def _against_noop(name: str, what: str) -> Difference:
    return Difference(f"{what}: CPU per message against the no-op handler", f"features.{name}",
                      "features.noop", "cpu_us_per_msg", "x", ratio=True)  # fmt: skip


DIFFERENCES = (
    Difference("CPU of raw aio-pika's awaited ack, per message", "drain.raw-consume",
               "drain.raw-noack", "cpu_us_per_msg", "µs"),
    Difference("eventworker's CPU per message above raw aio-pika (wait=False)",
               "drain.eventworker", "drain.raw-nowait", "cpu_us_per_msg", "µs"),
    Difference("Extra eventworker CPU per retried message (fails once, then succeeds)",
               "retry.eventworker-retry-once", "retry.eventworker-noop", "cpu_us_per_msg", "µs"),
    Difference("eventworker RSS above raw aio-pika", "memory.eventworker-small",
               "memory.raw-small", "peak_rss_mb", "MB"),
    _against_noop("model", "Pydantic model (10 fields)"),
    _against_noop("model-json", "Model + JSON logs at INFO"),
    _against_noop("model-json-metrics", "Model + JSON logs + metrics"),
    _against_noop("model-json-metrics-line", "... + one INFO line per event"),
    _against_noop("inbox-sqlite", "Model + JSON logs + metrics + inbox on SQLite"),
    _against_noop("inbox-postgres", "Model + JSON logs + metrics + inbox on PostgreSQL"),
    _against_noop("inbox-redis", "Model + JSON logs + metrics + inbox on Redis"),
    *(
        Difference(f"{what}: CPU per message above model + JSON logs + metrics",
                   f"features.{name}", "features.model-json-metrics", "cpu_us_per_msg", "µs")
        for name, what in (
            ("model-json-metrics-line", "One INFO line per event (JSON)"),
            ("inbox-sqlite", "Inbox on SQLite"),
            ("inbox-postgres", "Inbox on PostgreSQL"),
            ("inbox-redis", "Inbox on Redis"),
        )
    ),
)  # fmt: skip


def differences(results: Results) -> list[dict[str, Any]]:
    """The derived figures this run can give (both cases measured)."""
    found = []
    for d in DIFFERENCES:
        if d.ratio:
            value = results.ratio(d.case, d.reference, d.metric)
        else:
            value = results.difference(d.case, d.reference, d.metric)
        if value is not None:
            found.append({"figure": d.text, "value": round(value, 2 if d.ratio else 1),
                          "unit": d.unit})  # fmt: skip
    return found
