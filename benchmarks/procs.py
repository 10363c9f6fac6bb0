"""Processes a benchmark starts: each in a session of its own, always stopped, measured in /proc.

A child runs in a new session, so a Ctrl-C in the terminal reaches the harness only: the harness
then stops every child itself (its whole process group, which covers Dramatiq's worker
processes), and an ``atexit`` hook kills whatever a crash left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_GRACE = 20.0
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")
_live: set[Child] = set()


class ChildFailed(RuntimeError):
    """A child exited early or did not do its part in time; the message holds its log tail."""


class Child:
    """One started process; its stdout and stderr go to ``log``."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def failure(self, what: str) -> ChildFailed:
        tail = "\n".join(self.output().splitlines()[-15:])
        return ChildFailed(
            f"{what}: {' '.join(self.argv[:4])} ... (exit {self.popen.poll()})\n{tail}"
        )

    async def wait_for_line(self, text: str, timeout: float) -> float:
        """Wait until ``text`` appears in the output; returns when it was seen (monotonic).

        Raises:
            ChildFailed: the child exited first, or ``timeout`` passed.
        """
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.running():
                raise self.failure(f"exited before printing {text!r}")
            if time.monotonic() > deadline:
                raise self.failure(f"did not print {text!r} within {timeout:g}s")
            await asyncio.sleep(0.005)
        return time.monotonic()

    async def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM to the whole group, SIGKILL after ``grace``; returns the exit code."""
        _signal_group(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, grace)
        # Also kills what the group left behind (a Dramatiq worker process, say).
        _signal_group(self.pid, signal.SIGKILL)
        code = await asyncio.to_thread(self.popen.wait)
        _live.discard(self)
        return code


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@atexit.register
def _kill_leftovers() -> None:
    for child in list(_live):
        _signal_group(child.pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Finished:
    """A process run to its end: exit code, output, wall and CPU seconds, peak RSS in bytes."""

    code: int
    output: str
    wall: float
    cpu: float
    peak_rss: int


async def run_to_end(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path, timeout: float
) -> Finished:
    """Run a process to its end and measure it (``wait4`` gives its own CPU and peak RSS).

    Raises:
        ChildFailed: it ran longer than ``timeout`` (it is killed).
    """
    child = Child(argv, env=env, cwd=cwd, log=log)
    waiting = asyncio.ensure_future(asyncio.to_thread(os.wait4, child.pid, 0))
    try:
        _, status, usage = await asyncio.wait_for(asyncio.shield(waiting), timeout)
    except TimeoutError:
        _signal_group(child.pid, signal.SIGKILL)
        await waiting  # reaps it
        raise child.failure(f"still running after {timeout:g}s") from None
    finally:
        _live.discard(child)
    wall = time.monotonic() - child.started
    # Reaped by wait4, not by Popen: tell Popen, so it never waits for it again.
    child.popen.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        code=child.popen.returncode,
        output=child.output(),
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=usage.ru_maxrss * 1024,
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process so far (all its threads), to the nanosecond where /proc has
    schedstat, else in clock ticks."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (FileNotFoundError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmHWM for process {pid}")


def group_pids(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (a child and what it forked)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def group_peak_rss(pgid: int) -> int:
    """The sum of the peak resident sets of a process group's live processes, in bytes."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            total += peak_rss(pid)
    return total
