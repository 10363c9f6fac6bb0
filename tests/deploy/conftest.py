"""Fixtures of the deployment tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without eventworker.toml, and no setting in the environment."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("EVENTWORKER_") and not key.startswith("EVENTWORKER_TEST_"):
            monkeypatch.delenv(key)
    return tmp_path
