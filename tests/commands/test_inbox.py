"""``eventworker inbox stats|purge``, and ``eventworker run`` with idempotent handlers, run as
a user would: subprocesses against the real stores and broker."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import IO

from eventworker.errors import ExitCode
from eventworker.inbox.protocol import Key
from eventworker.inbox.stores import open_store
from eventworker.settings import InboxSettings, Settings
from tests.support.broker import Broker, wait_for
from tests.support.cli import CANARY, EVENTWORKER, cli, env_for


def store_env(inbox: InboxSettings) -> dict[str, str]:
    return {
        "EVENTWORKER_INBOX__URL": inbox.url.get_secret_value(),
        "EVENTWORKER_INBOX__NAME": inbox.name,
    }


async def fill(inbox: InboxSettings) -> None:
    """Handler a: two done (one seen twice more), one in progress; handler b: one done."""
    store = open_store(inbox)
    await store.open()
    try:
        for handler, event, done in (("a", "1", True), ("a", "2", True), ("a", "3", False)):
            await store.claim(Key(handler, event), body_hash="h", owner="o", token=event, lease=60)
            if done:
                await store.complete(Key(handler, event), token=event)
        for _ in range(2):
            await store.claim(Key("a", "1"), body_hash="h", owner="o", token="again", lease=60)
        await store.claim(Key("b", "1"), body_hash="h", owner="o", token="b", lease=60)
        await store.complete(Key("b", "1"), token="b")
    finally:
        await store.close()


async def test_inbox_stats_counts_entries_per_handler(
    settings: Settings, shared_inbox: InboxSettings
) -> None:
    await fill(shared_inbox)
    result = cli(settings, "inbox", "stats", "--json", **store_env(shared_inbox))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == shared_inbox.name
    assert report["store"] == shared_inbox.redacted_url()
    assert report["handlers"] == [
        {"handler": "a", "completed": 2, "in_progress": 1, "expired": 0, "duplicates": 2},
        {"handler": "b", "completed": 1, "in_progress": 0, "expired": 0, "duplicates": 0},
    ]
    text = cli(settings, "inbox", "stats", **store_env(shared_inbox)).stdout
    assert "completed" in text and "duplicates" in text
    assert text.splitlines()[-2].split() == ["a", "2", "1", "0", "2"]


async def test_inbox_purge_removes_completed_entries_of_one_handler(
    settings: Settings, shared_inbox: InboxSettings
) -> None:
    await fill(shared_inbox)
    env = store_env(shared_inbox)
    kept = cli(settings, "inbox", "purge", **env)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("removed 0 entries older than 604800s")
    result = cli(settings, "inbox", "purge", "--older-than", "0", "--handler", "a", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed 2 entries older than 0s")
    report = json.loads(cli(settings, "inbox", "stats", "--json", **env).stdout)
    assert [(h["handler"], h["completed"], h["in_progress"]) for h in report["handlers"]] == [
        ("a", 0, 1),
        ("b", 1, 0),
    ]


def test_inbox_stats_of_a_missing_sqlite_file_fails_without_creating_it(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "missing.db"
    result = cli(settings, "inbox", "stats", "--store", f"sqlite:///{path}")
    assert result.returncode == ExitCode.INBOX_UNAVAILABLE
    assert f"no SQLite inbox at {path}" in result.stderr
    assert not path.exists()


def test_inbox_stats_of_an_unreachable_store_fails_without_the_password(
    settings: Settings,
) -> None:
    url = f"postgresql://app:{CANARY}@127.0.0.1:1/app"
    result = cli(settings, "inbox", "stats", EVENTWORKER_INBOX__URL=url)
    assert result.returncode == ExitCode.INBOX_UNAVAILABLE
    assert "postgresql://app:***@127.0.0.1:1/app" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_an_inbox_url_naming_no_store_is_a_config_error(settings: Settings) -> None:
    result = cli(settings, "inbox", "purge", "--store", f"mysql://app:{CANARY}@db/app")
    assert result.returncode == ExitCode.CONFIG
    assert "inbox.url" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_run_with_idempotent_handlers_and_no_reachable_store_stops_before_consuming(
    settings: Settings,
) -> None:
    url = f"redis://:{CANARY}@127.0.0.1:1/0"
    result = cli(
        settings,
        "run",
        "--handler",
        "greet",
        EVENTWORKER_INBOX__IDEMPOTENT="true",
        EVENTWORKER_INBOX__URL=url,
    )
    assert result.returncode == ExitCode.INBOX_UNAVAILABLE
    assert "redis://:***@127.0.0.1:1/0" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def start(settings: Settings, stream: IO[str], **env: str) -> subprocess.Popen[bytes]:
    """``eventworker run --handler greet`` with a debug log into ``stream``."""
    return subprocess.Popen(
        [EVENTWORKER, "run", "--handler", "greet", "--log-level", "DEBUG"],
        stdout=stream,
        stderr=subprocess.STDOUT,
        env=env_for(settings, **env),
    )


async def test_run_makes_the_installed_handlers_idempotent_by_setting(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    [queue] = broker.track_installed("greet")
    log = tmp_path / "worker.log"
    with log.open("w") as stream:
        worker = start(
            settings,
            stream,
            EVENTWORKER_INBOX__IDEMPOTENT="true",
            EVENTWORKER_INBOX__URL=f"sqlite:///{tmp_path / 'inbox.db'}",
        )
        try:
            await wait_for(lambda: "handler greet from" in log.read_text(), 30)
            for _ in range(2):
                published = cli(settings, "publish", "demo.greet", '{"name": "Ada"}', "--id", "g1")
                assert published.returncode == 0, published.stderr
            await wait_for(lambda: "skipped g1: a duplicate" in log.read_text(), 30)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    text = log.read_text()
    assert f"inbox sqlite:///{tmp_path / 'inbox.db'} for idempotent handlers greet" in text
    assert text.count("hello, Ada") == 1
    assert await broker.count(queue) == 0
