"""Medians, ranges, percentiles and paired ratios: the arithmetic of the report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the repetitions."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), nearest rank: an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def paired_ratio(case: Mapping[int, float], baseline: Mapping[int, float]) -> float | None:
    """The median over repetitions of ``case / baseline`` within the same repetition.

    Both were measured minutes apart in the same round, so a machine that is busier in one
    round than in another moves both: the ratio is steadier than either figure. ``None`` when
    they share no repetition.
    """
    ratios = [case[run] / baseline[run] for run in case if baseline.get(run)]
    return statistics.median(ratios) if ratios else None


def paired_difference(case: Mapping[int, float], baseline: Mapping[int, float]) -> float | None:
    """The median over repetitions of ``case - baseline`` within the same repetition."""
    diffs = [case[run] - baseline[run] for run in case if run in baseline]
    return statistics.median(diffs) if diffs else None
