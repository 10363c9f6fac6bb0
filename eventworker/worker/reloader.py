"""``eventworker run --reload``, for development: the worker restarted, after a drain, whenever
a Python file of the plugins' sources (or of the current directory) changes.

The reloader holds no broker connection and never imports the plugins again: it runs the
worker as a child ``eventworker run`` (so every restart imports the changed code afresh) and
watches the folders with watchfiles (the ``dev`` extra). On a change it sends the child
SIGTERM, so that it stops consuming and lets running handlers finish within the grace period
(what it had not settled goes back to the broker), waits for it to exit, and starts a new one.
A child that exits by itself (a plugin that no longer imports, say) is started again at the
next change. SIGTERM/SIGINT are forwarded to the child as the supervisor forwards them; the
reloader then exits with the child's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from loguru import logger

from eventworker.errors import ExitCode
from eventworker.worker.supervisor import SUPERVISOR_ENV, ChildSpec, StopRequests

#: Changes closer together than this (an editor saving several files) make one restart.
DEBOUNCE_MS = 300


def source_paths(modules: Iterable[str], cwd: Path | None = None) -> list[Path]:
    """What to watch for ``modules`` (the handlers' modules): the folder of each one's
    top-level package, or the file of a top-level module; and the current directory. A path
    inside another one watched is left out."""
    found: set[Path] = {(cwd or Path.cwd()).resolve()}
    for name in modules:
        top: ModuleType | None = sys.modules.get(name.partition(".")[0])
        if top is None:
            continue
        for folder in getattr(top, "__path__", None) or ():
            found.add(Path(folder).resolve())
        if getattr(top, "__path__", None) is None and getattr(top, "__file__", None):
            found.add(Path(str(top.__file__)).resolve())
    return sorted(p for p in found if not any(o != p and p.is_relative_to(o) for o in found))


class Reloader:
    """Runs the child of ``spec``, restarting it when a Python file under ``paths`` changes;
    :meth:`run` returns the exit code."""

    def __init__(self, spec: ChildSpec, paths: Sequence[Path]) -> None:
        self._spec = spec
        self._paths = list(paths)
        self._child: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._changes: set[str] = set()
        self._signals = StopRequests()

    async def run(self) -> int:
        import watchfiles

        # Its "N changes detected" lines say less than ours, which name the files.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        watching = asyncio.ensure_future(self._watch(watchfiles))
        logger.info(
            "reload: watching {} for changes to Python files", ", ".join(map(str, self._paths))
        )
        try:
            return await self._loop()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _loop(self) -> int:
        while True:
            self._changed.clear()
            self._changes.clear()
            env = {**self._spec.env, SUPERVISOR_ENV: str(os.getpid())}
            child = self._child = await asyncio.create_subprocess_exec(*self._spec.argv, env=env)
            logger.info("reload: worker started (pid {})", child.pid)
            if self._stopping.is_set():  # a signal came while it was starting
                child.send_signal(signal.SIGTERM)
            exited = asyncio.ensure_future(child.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({exited, changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopping.cancel()
            if not exited.done() and not self._stopping.is_set():
                logger.info(
                    "reload: {} changed; restarting the worker (draining it first)",
                    ", ".join(sorted(self._changes)[:3])
                    + (" ..." if len(self._changes) > 3 else ""),
                )
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
            code = await exited
            self._child = None
            if self._stopping.is_set():
                # Killed by the forwarded signal before its worker took over the signals: it
                # had not started consuming, so nothing was left unsettled.
                if self._signals.count > 1:
                    return int(ExitCode.INTERRUPTED)
                return 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code
            if not self._changed.is_set():
                logger.warning(
                    "reload: the worker exited with code {}; it starts again at the next change",
                    code,
                )
                changed = asyncio.ensure_future(self._changed.wait())
                stopping = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                stopping.cancel()
                if self._stopping.is_set():
                    return code

    async def _watch(self, watchfiles: ModuleType) -> None:
        async for changes in watchfiles.awatch(
            *self._paths,
            watch_filter=watchfiles.PythonFilter(),
            debounce=DEBOUNCE_MS,
            stop_event=self._stopping,
        ):
            self._changes.update(path for _, path in changes)
            self._changed.set()

    def _on_signal(self, signum: int) -> None:
        if not self._signals.new():
            return
        self._stopping.set()
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                self._child.send_signal(signum)
