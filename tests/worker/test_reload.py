"""``eventworker run --reload``: a change to a plugin's source restarts the worker, after a
drain, and the next event from the broker runs the new code."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eventworker.settings import Settings
from tests.support.broker import Broker, wait_for
from tests.support.cli import EVENTWORKER, env_for
from tests.support.distributions import install
from tests.support.queues import sink

SOURCE = """
import asyncio

from eventworker import Context, Event, handler


@handler("reload.ping", name="reloading")
async def reloading(event: Event[dict], ctx: Context) -> None:
    ctx.logger.info("handling ping {}", event.data["n"])
    await asyncio.sleep(event.data["sleep"])
    await ctx.publish("reload.pong", {"version": VERSION, "ping": event.data["n"]})


VERSION = 1
"""


def _plugin(site: Path) -> Path:
    install(
        site,
        distribution="acme-reload",
        entry_points={"eventworker.handlers": "reloading = acme_reload.handlers"},
        files={"acme_reload/handlers.py": SOURCE},
    )
    return site / "acme_reload" / "handlers.py"


async def _ping(broker: Broker, n: int, sleep: float = 0) -> None:
    body = json.dumps({"n": n, "sleep": sleep}).encode()
    await broker.publish("reload.ping", body, content_type="application/json")


async def _pong(broker: Broker, queue: str, n: int) -> dict[str, int]:
    await _ping(broker, n)
    [message] = await broker.take_all(queue, expect=1, timeout=15)
    return json.loads(message.body)  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
async def test_a_changed_handler_restarts_the_worker_and_the_new_code_handles_the_next_event(
    broker: Broker, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _plugin(tmp_path / "site")
    # The queues the worker in the subprocess declares, for the clean-up.
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    broker.track_installed("reloading")
    for name in ("acme_reload", "acme_reload.handlers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    pongs = await sink(broker, "reload.pong", name="pongs")
    env = env_for(
        settings,
        PYTHONPATH=str(tmp_path / "site"),
        EVENTWORKER_PLUGINS="reloading",
        EVENTWORKER_GRACE="5",
    )
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "run",
        "--reload",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            lines.append(raw.decode(errors="replace"))

    reader = asyncio.ensure_future(read())
    try:
        await wait_for(lambda: any("handler reloading from" in x for x in lines), timeout=20)
        assert await _pong(broker, pongs, 1) == {"version": 1, "ping": 1}

        # A handling in flight when the source changes: the old worker finishes it first.
        await _ping(broker, 2, sleep=1.5)
        await wait_for(lambda: any("handling ping 2" in x for x in lines), timeout=10)
        source.write_text(SOURCE.replace("VERSION = 1", "VERSION = 2"))
        await wait_for(lambda: sum("handler reloading from" in x for x in lines) >= 2, timeout=20)
        [restart] = [x for x in lines if "restarting the worker" in x]
        assert "acme_reload/handlers.py changed" in restart
        started = [i for i, x in enumerate(lines) if "reload: worker started" in x]
        [drained] = [i for i, x in enumerate(lines) if "drained in" in x]
        assert len(started) == 2 and drained < started[1]
        assert "1 finished, 0 unfinished" in lines[drained]
        [finished] = await broker.take_all(pongs, expect=1, timeout=15)
        assert json.loads(finished.body) == {"version": 1, "ping": 2}
        assert await _pong(broker, pongs, 3) == {"version": 2, "ping": 3}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)
        await reader
    assert code == 0, "".join(lines)
    assert not any("Traceback" in x for x in lines), "".join(lines)


def test_reload_without_watchfiles_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    blocker = tmp_path / "nowatch"
    blocker.mkdir()
    # Found before the installed one: as if watchfiles were not installed.
    (blocker / "watchfiles.py").write_text("raise ImportError('No module named watchfiles')\n")
    result = subprocess.run(
        [EVENTWORKER, "run", "--reload"],
        capture_output=True,
        text=True,
        env=env_for(settings, PYTHONPATH=str(blocker)),
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --reload needs watchfiles"), result.stderr


def test_the_watched_paths_are_package_folders_module_files_and_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventworker.worker.reloader import source_paths

    site, cwd = tmp_path / "site", tmp_path / "cwd"
    install(
        site,
        distribution="acme-watch",
        entry_points={},
        files={"acme_pkg/sub/handlers.py": "", "acme_single.py": ""},
    )
    cwd.mkdir()
    (cwd / "acme_here.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(cwd))
    for name in ("acme_pkg", "acme_pkg.sub", "acme_pkg.sub.handlers", "acme_single", "acme_here"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        __import__(name)
    paths = source_paths(
        ["acme_pkg.sub.handlers", "acme_single", "acme_here", "not_imported"], cwd=cwd
    )
    # acme_here lies in the current directory, which is watched whole.
    assert paths == sorted(
        [(site / "acme_pkg").resolve(), (site / "acme_single.py").resolve(), cwd.resolve()]
    )
