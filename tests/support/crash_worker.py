"""A worker whose handler kills its own process on a poison message, for test_crash_loop.py.

Run as ``python -m tests.support.crash_worker`` with the EVENTWORKER_* settings in the environment
and CRASH_LOG naming a file that gets one line per event handled.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from eventworker import Context, Event, handler
from eventworker.settings import load_settings
from eventworker.worker.lifecycle import Worker
from tests.support.broker import registrations


@handler("crash.#", name="crashy")
def crashy(event: Event[Any], ctx: Context) -> None:
    """Like a segfault or an out-of-memory kill: no settle, no cleanup."""
    if event.data.get("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.environ["CRASH_LOG"], "a") as log:
        log.write(f"{event.id}\n")


def main() -> None:
    asyncio.run(Worker(registrations(crashy), load_settings()).run(handle_signals=True))


if __name__ == "__main__":
    main()
