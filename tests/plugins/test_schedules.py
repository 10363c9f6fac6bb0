"""Gathering a worker's schedules: the plugins' and [[schedules]], one name each, errors with
exit code 4 naming the schedule and where it was declared."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from eventworker.errors import ExitCode, RegistryError
from eventworker.plugins.discovery import Plugin, Registration
from eventworker.plugins.schedules import gather
from eventworker.settings import Settings
from tests.support import distributions
from tests.support.broker import registrations

EVERY_MINUTE = {"name": "close", "cron": "* * * * *", "routing_key": "books.close"}


def _with_plugin_schedule() -> list[Registration]:
    from docs.examples import schedules as module
    from eventworker.schedules import declared_in

    (reg,) = registrations(module.probe)
    found = tuple(replace(s, source="plugin 'demo'") for s in declared_in(module))
    plugin = Plugin("demo", "docs.examples.schedules", "demo-dist", "1.0", schedules=found)
    return [replace(reg, plugin=plugin)]


def test_plugin_and_settings_schedules_are_gathered_with_their_source() -> None:
    settings = Settings(schedules=[EVERY_MINUTE])  # type: ignore[list-item]
    found = gather(_with_plugin_schedule(), settings)
    assert [(s.name, s.source) for s in found] == [
        ("reports.hourly", "plugin 'demo'"),
        ("probe", "plugin 'demo'"),
        ("close", "settings [[schedules]]"),
    ]


def test_a_name_used_twice_names_both_sources() -> None:
    settings = Settings(schedules=[{**EVERY_MINUTE, "name": "probe"}])  # type: ignore[list-item]
    with pytest.raises(RegistryError) as twice:
        gather(_with_plugin_schedule(), settings)
    assert "'probe' is declared twice: by plugin 'demo' and by settings" in str(twice.value)


def test_run_exits_4_on_a_bad_settings_schedule_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "eventworker.toml"
    config.write_text(
        '[[schedules]]\nname = "nightly"\ncron = "0 0 * * *"\nrouting_key = "books.close"\n'
        'timezone = "Mars/Olympus"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    done = subprocess.run(
        [sys.executable, "-m", "eventworker", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == ExitCode.PLUGIN, done.stderr
    assert "schedule 'nightly': unknown timezone 'Mars/Olympus'" in done.stderr


def test_run_exits_4_on_a_plugin_schedule_with_a_bad_cron_naming_file_and_line(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    distributions.install(
        site,
        distribution="bad-schedule",
        entry_points={"eventworker.handlers": "bad = bad_schedule.handlers"},
        files={
            "bad_schedule/handlers.py": (
                "from eventworker import handler, schedule\n"
                "\n"
                'hourly = schedule("0 25 * * *", "reports.hourly")\n'
                "\n"
                '@handler("reports.hourly")\n'
                "async def report(event, ctx): ...\n"
            )
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env.update(PYTHONPATH=str(site), EVENTWORKER_PLUGINS="bad")
    done = subprocess.run(
        [sys.executable, "-m", "eventworker", "run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == ExitCode.PLUGIN, done.stderr
    assert "plugin 'bad'" in done.stderr
    assert "bad_schedule/handlers.py:3" in done.stderr
    assert "schedule 'reports.hourly': bad cron expression '0 25 * * *': Bad hour" in done.stderr
