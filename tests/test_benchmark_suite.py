"""The benchmark suite (``python -m benchmarks``): a smoke run against the real broker, and its
pure parts. Benchmarks are not timed tests: nothing here asserts a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import runner, scenarios, stats
from benchmarks.harness import REPO
from tests.support.stores import POSTGRES_URL, REDIS_URL, skip_or_fail, unavailable


def quick_run(broker_url: str, out: Path, *options: str) -> dict[str, Any]:
    """``python -m benchmarks --quick --no-peers`` with ``options``; its JSON result."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", *options),
            *("--no-peers", "--url", broker_url, "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return result


def test_a_quick_run_of_cheap_scenarios_exits_0_and_writes_ratios(
    broker_url: str, tmp_path: Path
) -> None:
    only = ("drain.raw-consume", "drain.eventworker", "delay.eventworker-1s", "startup.help")
    doc = quick_run(broker_url, tmp_path, "--only", *only)
    drain = next(g for g in doc["groups"] if g["name"] == "drain")
    cases = {c["id"]: c for c in drain["cases"]}
    # The baseline of the group is measured even though it was not named.
    assert drain["baseline"] == "drain.raw-nowait"
    assert set(cases) == {"drain.raw-consume", "drain.raw-nowait", "drain.eventworker"}
    assert cases["drain.raw-nowait"]["ratio"]["msgs_per_s"] == pytest.approx(1.0)
    assert cases["drain.eventworker"]["ratio"]["msgs_per_s"] > 0
    assert cases["drain.eventworker"]["summary"]["cpu_us_per_msg"]["median"] > 0
    delay = next(g for g in doc["groups"] if g["name"] == "delay")
    held = {c["id"]: c for c in delay["cases"]}
    assert set(held) == {"delay.raw-immediate", "delay.eventworker-1s"}
    assert held["delay.eventworker-1s"]["summary"]["cpu_us_per_msg"]["median"] > 0
    assert held["delay.eventworker-1s"]["ratio"]["msgs_per_s"] > 0
    assert (tmp_path / "latest.md").read_text().startswith("Run ")
    assert any(g["goal"].startswith("eventworker --help") for g in doc["goals"])


def test_a_quick_run_of_the_dlq_group_replays_every_dead_letter_and_judges_its_goals(
    broker_url: str, tmp_path: Path
) -> None:
    doc = quick_run(broker_url, tmp_path, "--only", "dlq", "--dlq", "300")
    group = next(g for g in doc["groups"] if g["name"] == "dlq")
    cases = {c["id"]: c for c in group["cases"]}
    assert group["baseline"] == "dlq.publish-file"
    # The case fails unless the replay moved every dead letter and left none behind.
    assert cases["dlq.eventworker-replay"]["ratio"]["msgs_per_s"] > 0
    judged = {g["goal"]: g["status"] for g in doc["goals"]}
    assert judged["dlq replay ≥ 0.8x publish --file"] in {"met", "missed"}
    assert judged["dlq replay ≥ 5,000 messages/s"] in {"met", "missed"}


def test_selecting_a_case_adds_its_groups_baseline_and_leaves_peers_out() -> None:
    chosen = runner.select(
        scenarios.all_cases(),
        ["drain.raw-consume", "drain.faststream*", "startup.help"],
        peers=False,
    )
    assert [c.id for c in chosen] == ["drain.raw-consume", "drain.raw-nowait", "startup.help"]


def test_an_unknown_scenario_name_is_refused() -> None:
    with pytest.raises(runner.UnknownScenario):
        runner.select(scenarios.all_cases(), ["nope"], peers=True)


def test_every_group_but_start_up_has_exactly_one_baseline() -> None:
    cases = scenarios.all_cases()
    for group in scenarios.groups():
        baselines = [c for c in cases if c.group == group.name and c.baseline]
        assert len(baselines) == (0 if group.name == "startup" else 1), group.name


def test_ratios_pair_repetitions_and_percentiles_are_observed_values() -> None:
    assert stats.paired_ratio({0: 10.0, 1: 30.0, 2: 5.0}, {0: 5.0, 1: 10.0}) == 2.5
    assert stats.paired_ratio({0: 1.0}, {1: 1.0}) is None
    assert stats.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert stats.percentile([float(n) for n in range(1, 101)], 99) == 99.0


def test_a_quick_run_of_the_features_and_waiting_groups_prints_their_figures_and_plot(
    broker_url: str, tmp_path: Path
) -> None:
    """Every case of both groups measured (the inbox on SQLite, PostgreSQL and Redis), their
    goals judged, the ratios to the no-op derived, and the waiting curve drawn."""
    for store in ("postgres", "redis"):
        if reason := unavailable(store):
            skip_or_fail(reason)
    plot = tmp_path / "waiting.png"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--no-peers"),
            *("--only", "features", "waiting"),
            *("--url", broker_url, "--out", str(tmp_path), "--plot", str(plot)),
        ],
        cwd=REPO,
        env={
            **os.environ,
            "EVENTWORKER_BENCH_PG_DSN": POSTGRES_URL,
            "EVENTWORKER_BENCH_REDIS_URL": REDIS_URL,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    groups = {g["name"]: g for g in doc["groups"]}
    assert set(groups) == {"features", "waiting"}
    for group in groups.values():
        for case in group["cases"]:
            assert case["samples"] and not case["failures"], case["id"]
            assert case["summary"]["msgs_per_s"]["median"] > 0, case["id"]
            assert case["summary"]["cpu_us_per_msg"]["median"] > 0, case["id"]
    assert len(groups["features"]["cases"]) == 9
    assert len(groups["waiting"]["cases"]) == 6
    fraction = groups["waiting"]["cases"][1]["summary"]["bound_fraction"]["median"]
    assert 0 < fraction < 1.5
    judged = {g["goal"]: g["status"] for g in doc["goals"]}
    ours = [text for text in judged if text.startswith(("Model + JSON", "Waiting 5 ms"))]
    assert len(ours) == 4
    assert all(judged[text] in ("met", "missed") for text in ours)
    derived = {d["figure"] for d in doc["differences"]}
    assert "Model + JSON logs + metrics: CPU per message against the no-op handler" in derived
    assert "Inbox on Redis: CPU per message above model + JSON logs + metrics" in derived
    table = done.stdout
    assert "### Features:" in table and "### Waiting:" in table
    assert "| eventworker run, concurrency 256 |" in table
    assert plot.read_bytes().startswith(b"\x89PNG")
