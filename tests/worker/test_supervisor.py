"""``eventworker run --processes N``: the supervisor (eventworker/worker/supervisor.py) with
stand-in children, then the real command against the broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from eventworker.settings import Settings
from eventworker.worker import supervisor
from eventworker.worker.supervisor import ChildSpec, Supervisor
from tests.support.broker import Broker
from tests.support.cli import EVENTWORKER, env_for
from tests.support.metrics import eventually, start_worker_with_metrics


def _specs(code: str, log: Path, count: int = 1) -> list[ChildSpec]:
    """Children running ``code`` with LOG naming ``log`` and INDEX their index."""
    return [
        ChildSpec(i, [sys.executable, "-c", code], {**os.environ, "LOG": str(log), "INDEX": str(i)})
        for i in range(count)
    ]


def _lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def test_a_failing_child_is_restarted_with_backoff_then_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_FIRST", 0.01)
    log = tmp_path / "starts"
    code = "import os, sys; open(os.environ['LOG'], 'a').write('start\\n'); sys.exit(1)"
    result = await asyncio.wait_for(Supervisor(_specs(code, log)).run(), 30)
    assert result == 1
    assert len(_lines(log)) == supervisor.GIVE_UP


async def test_a_fatal_exit_code_is_not_retried_and_drains_the_others(tmp_path: Path) -> None:
    log = tmp_path / "events"
    log.touch()
    code = (
        "import os, signal, sys, time\n"
        "log = lambda s: open(os.environ['LOG'], 'a').write(s + os.environ['INDEX'] + '\\n')\n"
        "if os.environ['INDEX'] == '0':\n"
        "    while 'start1' not in open(os.environ['LOG']).read():\n"
        "        time.sleep(0.01)\n"
        "    log('start')\n"
        "    sys.exit(3)  # ExitCode.CONFIG\n"
        "signal.signal(signal.SIGTERM, lambda *_: (log('drain'), sys.exit(0)))\n"
        "log('start')\n"
        "time.sleep(60)\n"
    )
    result = await asyncio.wait_for(Supervisor(_specs(code, log, 2)).run(), 30)
    assert result == 1
    assert sorted(_lines(log)) == ["drain1", "start0", "start1"]


async def test_stop_forwards_the_signal_and_a_clean_drain_exits_0(tmp_path: Path) -> None:
    log = tmp_path / "events"
    code = (
        "import os, signal, sys, time\n"
        "log = lambda s: open(os.environ['LOG'], 'a').write(s + os.environ['INDEX'] + '\\n')\n"
        "signal.signal(signal.SIGTERM, lambda *_: (log('drain'), sys.exit(0)))\n"
        "log('start')\n"
        "time.sleep(60)\n"
    )
    boss = Supervisor(_specs(code, log, 3))
    running = asyncio.create_task(boss.run())
    await eventually(lambda: _ready(log, 3), timeout=30)
    boss.stop()
    assert await asyncio.wait_for(running, 30) == 0
    assert sorted(_lines(log)) == ["drain0", "drain1", "drain2", "start0", "start1", "start2"]


async def _ready(log: Path, count: int) -> bool:
    return len(_lines(log)) >= count


# -- eventworker run --processes, against the broker ---------------------------------------


def _free_port_pair() -> int:
    """A port p with p + 1 free as well (each child binds metrics_port + its index)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two adjacent free ports")


async def test_run_processes_shares_the_queue_restarts_a_killed_child_and_drains(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    broker.track_installed("greet")
    queue = f"{settings.queue_prefix}greet"
    port = _free_port_pair()
    log = tmp_path / "run.log"
    process = start_worker_with_metrics(
        log, settings, "--processes=2", "--handler=greet", f"--metrics-port={port}"
    )
    try:
        await eventually(lambda: _consumers(broker, queue, 2), timeout=60)
        for n in range(30):
            await broker.publish("demo.greet", b'{"name": "Ada"}', message_id=f"g{n}")

        async def drained() -> bool:
            return await broker.count(queue) == 0

        await eventually(drained, timeout=30)
        # Each child serves its own endpoints: metrics_port + its index.
        for index in (0, 1):
            with socket.create_connection(("127.0.0.1", port + index), timeout=5):
                pass
        first = _child_pids(log)[0]
        os.kill(first, signal.SIGKILL)

        async def restarted() -> bool:
            return len(_child_pids(log)) == 3 and await _consumers(broker, queue, 2)

        await eventually(restarted, timeout=60)
        await broker.publish("demo.greet", b'{"name": "Bo"}', message_id="after")
        await eventually(drained, timeout=30)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    text = log.read_text()
    assert "restarting it in" in text
    assert text.count("drained in") == 2, text


async def test_children_drain_by_themselves_when_the_supervisor_is_killed(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    broker.track_installed("greet")
    queue = f"{settings.queue_prefix}greet"
    log = tmp_path / "run.log"
    process = start_worker_with_metrics(log, settings, "--processes=2", "--handler=greet")
    try:
        await eventually(lambda: _consumers(broker, queue, 2), timeout=60)
        children = _child_pids(log)
        process.kill()  # SIGKILL: no forwarding, no cleanup
        await asyncio.to_thread(process.wait, 10)
        await eventually(lambda: _consumers(broker, queue, 0), timeout=30)

        async def gone() -> bool:
            return not any(_alive(pid) for pid in children)

        await eventually(gone, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert log.read_text().count("is gone: draining") == 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _consumers(broker: Broker, queue: str, n: int) -> bool:
    try:
        return await broker.consumers(queue) == n
    except Exception:  # the queue is not declared yet
        return False


def _child_pids(log: Path) -> list[int]:
    return [
        int(pid)
        for pid in re.findall(r"worker process \d/2 started \(pid (\d+)\)", log.read_text())
    ]


def test_run_processes_gives_up_at_once_on_refused_credentials(settings: Settings) -> None:
    bad = "amqp://guest:wrong-CANARY@127.0.0.1:5672/"
    result = subprocess.run(
        [EVENTWORKER, "run", "--processes", "2", "--handler", "greet"],
        capture_output=True,
        text=True,
        env=env_for(settings, EVENTWORKER_URL=bad),
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "giving up" in result.stderr
    assert "wrong-CANARY" not in result.stderr + result.stdout
