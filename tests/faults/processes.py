"""Worker processes under test: start one with the test handlers, signal or kill it, read
its log and memory, and check that it stayed healthy (INV-ALIVE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from eventworker.settings import Settings
from tests.faults.plugin import Spec

REPO = Path(__file__).resolve().parents[2]
#: Log lines that mean an error escaped the worker's own handling (INV-ALIVE).
UNHANDLED = (
    "Task exception was never retrieved",
    "Traceback (most recent call last)",
    "Unhandled exception",
    "Fatal Python error",
)
#: The settings a worker process gets from its environment, as the test's settings hold them.
_SETTINGS = (
    "exchange",
    "queue_prefix",
    "queue_type",
    "delivery_limit",
    "concurrency",
    "prefetch",
    "handler_timeout",
    "grace",
    "max_body_bytes",
    "publish_timeout",
    "connect_timeout",
    "heartbeat",
    "broker_consumer_timeout",
    "watchdog_interval",
    "log_level",
    "unrouted_queue",
)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a worker process ``settings`` (password via env, not argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env["EVENTWORKER_URL"] = settings.url.get_secret_value()
    for name in _SETTINGS:
        env[f"EVENTWORKER_{name.upper()}"] = str(getattr(settings, name))
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m tests.faults.worker_main`` with the handlers of ``specs``; each start
    writes its own log file (``worker-<n>.log``)."""

    def __init__(
        self,
        folder: Path,
        ledger: Path,
        specs: Sequence[Spec],
        settings: Settings,
        *,
        sleep_scale: float = 1.0,
        audit_log: Path | None = None,
        run_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.ledger = ledger
        self.settings = settings
        self.sleep_scale = sleep_scale
        self.audit_log = audit_log
        self.run_args = list(run_args)
        self.extra_env = env or {}
        self.spec_file = folder / f"spec-{id(self)}.json"
        self.spec_file.write_text(json.dumps([s.to_json() for s in specs]))
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.pids: list[int] = []
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, sleep_scale: float | None = None) -> WorkerProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = self.folder / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log)
        command = [
            sys.executable,
            "-m",
            "tests.faults.worker_main",
            "--ledger",
            str(self.ledger),
            "--spec",
            str(self.spec_file),
            "--sleep-scale",
            str(self.sleep_scale if sleep_scale is None else sleep_scale),
        ]
        if self.audit_log is not None:
            command += ["--audit-log", str(self.audit_log)]
        command += ["--", *self.run_args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=settings_env(self.settings, **self.extra_env),
                cwd=self.folder,
            )
        self.pids.append(self.process.pid)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until the current process's log contains ``text`` (fails if it exits)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.alive():
                raise AssertionError(f"worker exited ({self.returncode()}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the worker log:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until the worker consumes every queue (its start-up log line is written after)."""
        self.wait_log("worker connected to", timeout)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        if len(self.exit_codes) < len(self.pids):
            self.exit_codes.append(code)
        return code

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the drain; the exit code."""
        if not self.alive():
            return self.wait(1)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log(self, which: int = -1) -> str:
        with contextlib.suppress(OSError, IndexError):
            return self.logs[which].read_text(errors="replace")
        return ""

    def all_logs(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def memory_kib(self, field: str = "VmRSS") -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the running process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.pid}")

    def cleanup(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(10)


def unhandled_errors(log: str) -> list[str]:
    """The lines of ``log`` that show an error escaping the worker's own handling."""
    return [line for line in log.splitlines() if any(u in line for u in UNHANDLED)]


def supervise(worker: WorkerProcess, stop: asyncio.Event, max_starts: int) -> asyncio.Task[int]:
    """Restart ``worker`` whenever it dies, like systemd would, until ``stop`` is set or it
    was started ``max_starts`` times; the task's result is how many times it was started."""

    async def loop() -> int:
        while not stop.is_set() and len(worker.pids) < max_starts:
            if not worker.alive():
                worker.start()
            await asyncio.sleep(0.2)
        return len(worker.pids)

    return asyncio.create_task(loop())
