"""``eventworker run --processes N``: N worker processes under one supervisor.

The supervisor holds no broker connection: each child is a complete ``eventworker run`` (its
own connections, consumers and prefetch), so the broker spreads the deliveries across them and
every at-least-once rule of one worker holds unchanged. The supervisor only:

- forwards SIGTERM/SIGINT to every child (the first one drains them, a second stops them at
  once). The children stay in the supervisor's process group, so killing the group (or the
  cgroup) reaches them all; a signal that reaches a child both that way and forwarded counts
  once, because a supervised worker ignores a repeat within ``REPEAT_WINDOW`` seconds. A child
  whose supervisor died (``SUPERVISOR_ENV`` names its pid) drains and exits by itself;
- restarts a child that exits without being asked to, after a pause that doubles from
  ``RESTART_FIRST`` to ``RESTART_MAX`` seconds (reset once a child ran ``STABLE`` seconds);
- gives up on a child that failed ``GIVE_UP`` times in a row, or with an exit code a restart
  cannot fix (configuration, plugin, credentials, topology conflict): it then drains the other
  children and exits 1 (ExitCode.FAILED).

It exits 0 when every child drained and exited 0, 130 after a second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from loguru import logger

from eventworker.backoff import Backoff
from eventworker.errors import ExitCode

RESTART_FIRST, RESTART_FACTOR, RESTART_MAX = 0.5, 2.0, 15.0
#: Set in each child's environment: the supervisor's pid.
SUPERVISOR_ENV = "EVENTWORKER_SUPERVISOR_PID"
#: A supervised worker takes a second signal this soon after the first for the same one.
REPEAT_WINDOW = 1.0
#: How often a supervised worker checks that its supervisor still lives.
PARENT_CHECK = 1.0


class StopRequests:
    """The stop requests signals made: a repeat within ``REPEAT_WINDOW`` seconds is the same
    request, delivered once to the process group and once by whoever signalled us."""

    def __init__(self) -> None:
        #: Distinct requests so far: the first drains, a second stops at once.
        self.count = 0
        self._first = 0.0

    def new(self) -> bool:
        """Record a signal; False when it repeats the last request."""
        now = time.monotonic()
        if self.count and now - self._first < REPEAT_WINDOW:
            return False
        self._first = now
        self.count += 1
        return True


#: A child that ran this long is healthy again: its failure count and pause start over.
STABLE = 60.0
#: Failures in a row after which a child has failed for good.
GIVE_UP = 5
#: Exit codes a restart cannot fix: the same configuration would fail the same way.
FATAL = frozenset(
    {
        ExitCode.USAGE,
        ExitCode.CONFIG,
        ExitCode.PLUGIN,
        ExitCode.BROKER_AUTH,
        ExitCode.BROKER_REFUSED,
    }
)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start child ``index``: its command line and its environment."""

    index: int
    argv: Sequence[str]
    env: Mapping[str, str]


class Supervisor:
    """Runs the children of ``specs`` until a signal; :meth:`run` returns the exit code."""

    def __init__(self, specs: Sequence[ChildSpec]) -> None:
        self._specs = list(specs)
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._signals = StopRequests()
        self.failed = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            codes = await asyncio.gather(*(self._slot(spec) for spec in self._specs))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._signals.count > 1:
            return ExitCode.INTERRUPTED
        if self.failed or any(codes):
            return ExitCode.FAILED
        return ExitCode.OK

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Drain every child (idempotent): forward ``signum`` to each one running."""
        self._stopping.set()
        for child in list(self._children.values()):
            with contextlib.suppress(ProcessLookupError):  # it just exited
                child.send_signal(signum)

    def _on_signal(self, signum: int) -> None:
        if not self._signals.new():
            return
        name = signal.Signals(signum).name
        if self._signals.count == 1:
            logger.info("{}: draining {} worker process(es)", name, len(self._children))
        else:
            logger.warning("second {}: worker processes stop at once", name)
        self.stop(signum)

    async def _slot(self, spec: ChildSpec) -> int:
        """Keep child ``spec.index`` running until stopped; its last exit code."""
        failures, backoff = 0, Backoff(RESTART_FIRST, RESTART_MAX, RESTART_FACTOR)
        while True:
            started = time.monotonic()
            env = {**spec.env, SUPERVISOR_ENV: str(os.getpid())}
            child = await asyncio.create_subprocess_exec(*spec.argv, env=env)
            self._children[spec.index] = child
            logger.info(
                "worker process {}/{} started (pid {})", spec.index + 1, len(self._specs), child.pid
            )
            if self._stopping.is_set():  # a signal came while it was starting
                child.send_signal(signal.SIGTERM)
            code = await child.wait()
            del self._children[spec.index]
            if self._stopping.is_set():
                # Killed by the forwarded signal before its worker took over the signals: it
                # had not started consuming, so nothing was left unsettled.
                return 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code
            if time.monotonic() - started >= STABLE:
                failures = 0
                backoff.reset()
            failures += 1
            if code in FATAL or failures >= GIVE_UP:
                logger.error(
                    "worker process {} exited with code {} ({} time(s) in a row): giving up; "
                    "draining the others",
                    spec.index + 1,
                    code,
                    failures,
                )
                self.failed = True
                self.stop()
                return code
            pause = backoff.next()
            logger.warning(
                "worker process {} exited with code {}; restarting it in {:g}s",
                spec.index + 1,
                code,
                pause,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():
                return code


async def watch_parent(parent: int, on_gone: Callable[[], None]) -> None:
    """In a supervised worker: call ``on_gone`` (a graceful stop) once ``parent``, the
    supervisor, is no longer this process's parent (it died, even by SIGKILL)."""
    # Polled: no portable notice of a parent's death exists (prctl's PDEATHSIG is Linux-only
    # and needs a pre-exec hook); a second's delay before the drain starts does no harm.
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(PARENT_CHECK)
    logger.warning("the supervisor (pid {}) is gone: draining", parent)
    on_gone()
