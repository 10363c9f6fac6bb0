"""The run's result file (JSON, for machines) and table (Markdown, for people and the docs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.harness import Group, Metric
from benchmarks.results import Outcome, Results


def document(
    results: Results,
    meta: dict[str, Any],
    goals: list[dict[str, Any]],
    differences: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything measured, with each case's summary and its ratios to its group's baseline."""
    return {
        **meta,
        "groups": [_group(g, results) for g in results.groups if results.in_group(g.name)],
        "differences": differences,
        "goals": goals,
    }


def _group(group: Group, results: Results) -> dict[str, Any]:
    base = results.baseline(group.name)
    return {
        "name": group.name,
        "title": group.title,
        "about": group.about,
        "baseline": base.case.id if base else None,
        "metrics": [
            {"key": m.key, "title": m.title, "better": m.better, "ratio": m.ratio}
            for m in group.metrics
        ],
        "cases": [_case(o, group, results) for o in results.in_group(group.name)],
    }


def _case(outcome: Outcome, group: Group, results: Results) -> dict[str, Any]:
    case = outcome.case
    return {
        "id": case.id,
        "label": case.label,
        "baseline": case.baseline,
        "skipped": outcome.skipped or None,
        "failures": {str(run): why for run, why in outcome.failures.items()},
        "samples": [{"run": run, **sample} for run, sample in sorted(outcome.samples.items())],
        "summary": {m.key: results.summary(case.id, m.key) for m in group.metrics},
        "ratio": {
            m.key: results.ratio_to_baseline(outcome, m.key) for m in group.metrics if m.ratio
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """One table per group (median and min-max of the repetitions; "x" = ratio to the
    group's baseline, paired by repetition), then the goals."""
    load = doc["load"]
    lines = [
        f"Run {doc['started']} on {doc['environment']['cpus']} CPUs, profile "
        f"{doc['profile']['name']}, {doc['runs']} interleaved repetition(s); load average "
        f"{load['before'][0]} before, {load['after'][0]} after; "
        f"eventworker {doc['environment']['commit']}."
        + (" **Interrupted: partial results.**" if doc.get("interrupted") else ""),
        "",
        _sizes(doc["profile"]),
        "",
    ]
    for group in doc["groups"]:
        lines += _table(group)
    lines += ["### Goals", "", "| Goal | Figure | Status |", "| --- | --- | --- |"]
    for goal in doc["goals"]:
        lines.append(f"| {goal['goal']} | {goal['detail']} | {goal['status']} |")
    if doc["differences"]:
        lines += ["", "### Derived figures", "", "| Figure | Median |", "| --- | --- |"]
        for d in doc["differences"]:
            lines.append(f"| {d['figure']} | {d['value']:g} {d['unit']} |")
    return "\n".join(lines) + "\n"


def _sizes(p: dict[str, Any]) -> str:
    return (
        f"Sizes: drain {p['drain']:,} messages; publish {p['publish']:,} events "
        f"({p['publish_await']:,} when each confirm is awaited); latency {p['latency_rate']:g} "
        f"msg/s for {p['latency_seconds']:g} s; memory backlogs {p['backlog_small']:,} and "
        f"{p['backlog_large']:,}; retry {p['retry']:,}; delay {p.get('delayed', 0):,}; "
        f"dead letters {p.get('dlq', 0):,}; "
        f"prefetch {p['prefetch']}."
    )


def _table(group: dict[str, Any]) -> list[str]:
    metrics = [Metric(**m) for m in group["metrics"]]
    with_ratio = {m.key for m in metrics if m.ratio and group["baseline"]}
    header = ["Case"]
    for m in metrics:
        header += [m.title, "x"] if m.key in with_ratio else [m.title]
    lines = [f"### {group['title']}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + " --- |" * len(header))
    for case in group["cases"]:
        label = case["label"] + (" **(baseline)**" if case["baseline"] else "")
        if case["skipped"]:
            lines.append(f"| {label} | skipped: {case['skipped']} |" + " |" * (len(header) - 2))
            continue
        if case["failures"]:
            label += f" ({len(case['failures'])} run(s) failed)"
        cells = [label]
        for m in metrics:
            cells.append(_cell(case["summary"][m.key]))
            if m.key in with_ratio:
                ratio = case["ratio"][m.key]
                cells.append("" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cell(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "—"
    median, low, high = summary["median"], summary["min"], summary["max"]
    if low == high:
        return _number(median)
    return f"{_number(median)} ({_number(low)}-{_number(high)})"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write(doc: dict[str, Any], directory: Path, name: str = "latest") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(doc))
    return json_path, md_path
