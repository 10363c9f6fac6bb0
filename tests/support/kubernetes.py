"""Running ``eventworker deploy kubernetes`` in tests: the option sets rendered, and the
output read back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import EVENTWORKER

KUBERNETES_VERSION = "1.30.0"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
CUSTOM_KINDS = {*KEDA_KINDS, "ServiceMonitor"}
#: Every shape of output: the option sets the tests render.
SHAPES = {
    "default": [],
    "split-keda": [
        "--split",
        "handler",
        "--autoscale",
        "keda",
        "--service-monitor",
        "--namespace",
        "jobs",
    ],
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env.update(extra)
    return env


def deploy(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTWORKER, "deploy", "kubernetes", "--image", "registry.example/acme:1.0", *args],
        capture_output=True,
        text=True,
        env=clean_env(**extra),
        cwd=cwd,
        timeout=120,
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]
