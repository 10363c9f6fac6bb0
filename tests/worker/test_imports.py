"""A plain ``eventworker run`` loads no optional feature it was not asked for: no metrics
server, tracing, inbox store, HTTP framework or template engine (memory a worker pays for
nothing)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from eventworker.settings import Settings
from tests.support.broker import ROOT, Broker
from tests.support.cli import env_for

#: Modules of features a worker with default settings does not use.
HEAVY = (
    "opentelemetry",
    "prometheus_client",
    "aiohttp",
    "asyncpg",
    "redis",
    "aiosqlite",
    "sqlite3",
    "psycopg",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "jinja2",
    "yaml",
)


def _modules_of_a_run(broker: Broker, out: Path, **extra: str) -> set[str]:
    """The modules an ``eventworker run`` of the example ``audit`` plugin had imported when it
    exited after SIGTERM, once it consumed."""
    broker.track_installed("audit_orders")
    env = env_for(broker.settings, EVENTWORKER_PLUGINS="audit", MODULES_OUT=str(out), **extra)
    log = out.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.modules_worker"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "worker connected to" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return set(json.loads(out.read_text()))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


async def test_a_worker_with_default_settings_imports_no_optional_feature(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    modules = _modules_of_a_run(broker, tmp_path / "modules.json")
    assert {"aio_pika", "eventworker.worker.lifecycle"} <= modules  # a worker ran
    assert _heavy(modules) == []


async def test_a_feature_asked_for_is_loaded(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    # The same run with the metrics server on: the check above sees a module when it is there.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    modules = _modules_of_a_run(
        broker, tmp_path / "modules.json", EVENTWORKER_METRICS_PORT=str(port)
    )
    assert "prometheus_client" in modules
