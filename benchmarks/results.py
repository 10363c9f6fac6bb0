"""What a run found: per case its samples by repetition, its failures or why it was skipped;
and the look-ups the report and the goals make (medians, ratios paired by repetition)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.harness import Case, Group, Sample
from benchmarks.stats import paired_difference, paired_ratio, summary


@dataclass
class Outcome:
    case: Case
    #: repetition index -> the figures measured in it
    samples: dict[int, Sample] = field(default_factory=dict)
    #: repetition index -> why that measurement failed
    failures: dict[int, str] = field(default_factory=dict)
    #: why the case was not run at all (a missing feature, a virtualenv that did not install)
    skipped: str = ""

    def values(self, metric: str) -> dict[int, float]:
        return {run: s[metric] for run, s in self.samples.items() if metric in s}


@dataclass
class Results:
    groups: Sequence[Group]
    outcomes: list[Outcome]

    def outcome(self, case_id: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.case.id == case_id), None)

    def in_group(self, group: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.case.group == group]

    def baseline(self, group: str) -> Outcome | None:
        return next((o for o in self.in_group(group) if o.case.baseline), None)

    def summary(self, case_id: str, metric: str) -> dict[str, float] | None:
        found = self.outcome(case_id)
        values = found.values(metric) if found else {}
        return summary(list(values.values())) if values else None

    def median(self, case_id: str, metric: str) -> float | None:
        found = self.summary(case_id, metric)
        return found["median"] if found else None

    def ratio(self, case_id: str, reference_id: str, metric: str) -> float | None:
        """``case / reference`` paired by repetition (see ``stats.paired_ratio``)."""
        case, reference = self.outcome(case_id), self.outcome(reference_id)
        if case is None or reference is None:
            return None
        return paired_ratio(case.values(metric), reference.values(metric))

    def difference(self, case_id: str, reference_id: str, metric: str) -> float | None:
        case, reference = self.outcome(case_id), self.outcome(reference_id)
        if case is None or reference is None:
            return None
        return paired_difference(case.values(metric), reference.values(metric))

    def ratio_to_baseline(self, outcome: Outcome, metric: str) -> float | None:
        base = self.baseline(outcome.case.group)
        return None if base is None else self.ratio(outcome.case.id, base.case.id, metric)
