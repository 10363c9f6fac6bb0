"""The producer benchmark runs and reports its two measures next to their baselines (a smoke
run with tiny counts: the numbers themselves are not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import PG_DSN

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "producers.py"


def test_the_benchmark_reports_ingress_requests_and_relay_rows_per_second(
    broker_url: str,
) -> None:
    env = {
        **os.environ,
        "EVENTWORKER_URL": broker_url,
        "EVENTWORKER_BENCH_PG_DSN": PG_DSN,
    }
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--requests", "40", "--rows", "60", "--keys", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    number = r"[\d,]+"
    assert re.search(
        rf"HTTP ingress, 40 requests.*\s{number}\s+{number}\s+[\d.]+$", run.stdout, re.M
    )
    assert re.search(
        rf"outbox relay, 60 rows, 5 keys.*\s{number}\s+{number}\s+[\d.]+$", run.stdout, re.M
    )
