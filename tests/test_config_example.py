"""config.example.toml documents every setting and holds exactly the defaults; no broker needed."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from eventworker.settings import InboxSettings, RetrySettings, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
#: The commented-out override table in the example, and the line that starts it.
EXAMPLE_OVERRIDE = "# [retry_overrides.bill_order]"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EVENTWORKER_* variable and no ./eventworker.toml can leak into the settings."""
    for key in list(os.environ):
        if key.startswith("EVENTWORKER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _parsed() -> dict[str, Any]:
    with EXAMPLE.open("rb") as f:
        return tomllib.load(f)


@pytest.mark.usefixtures("clean_env")
def test_the_example_config_loads_and_equals_the_defaults_field_by_field() -> None:
    loaded = load_settings(str(EXAMPLE))
    defaults = Settings()
    assert loaded.url.get_secret_value() == defaults.url.get_secret_value()
    for name in Settings.model_fields:
        assert getattr(loaded, name) == getattr(defaults, name), name
    for name in RetrySettings.model_fields:
        assert getattr(loaded.retry, name) == getattr(defaults.retry, name), f"retry.{name}"
    for name in InboxSettings.model_fields:
        assert getattr(loaded.inbox, name) == getattr(defaults.inbox, name), f"inbox.{name}"


def test_the_example_config_names_every_setting_and_every_nested_field() -> None:
    parsed = _parsed()
    assert set(parsed) == set(Settings.model_fields)
    assert set(parsed["retry"]) == set(RetrySettings.model_fields)
    assert set(parsed["inbox"]) == set(InboxSettings.model_fields)


def test_the_commented_retry_override_example_is_valid_when_uncommented() -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(EXAMPLE_OVERRIDE)
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    table = tomllib.loads("\n".join(block))["retry_overrides"]
    assert table, "the example override table is empty"
    for name, override in table.items():
        assert set(override) == set(RetrySettings.model_fields), name
        RetrySettings.model_validate(override)
