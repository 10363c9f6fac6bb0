"""What the run ran on (recorded with the results, since figures mean little without it) and
which features of ``eventworker`` exist yet."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import version
from typing import Any

from benchmarks.harness import REPO

#: Why a case that needs a missing feature is skipped.
MISSING = {
    "processes": "this eventworker run has no --processes option",
}


def features() -> dict[str, bool]:
    """Detected from ``eventworker run --help``, so the suite needs no change when they land."""
    help_text = subprocess.run(
        [sys.executable, "-m", "eventworker", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {"processes": "--processes" in help_text}


def load() -> list[float]:
    """The load averages (1, 5, 15 min): how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {p: version(p) for p in ("eventworker", "aio-pika", "aiormq", "orjson")},
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()
