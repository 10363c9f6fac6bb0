"""What every client program shares: its event loop, stopping on SIGTERM, its report line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

#: Printed (and flushed) by a consumer once it consumes; the harness waits for it.
READY = "bench-consumer-ready"


def run(main: Callable[[], Coroutine[Any, Any, None]], *, use_uvloop: bool = False) -> None:
    """Run ``main`` on asyncio's loop, or uvloop's."""
    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def stopped() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (the harness stops consumers with SIGTERM)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def ready() -> None:
    print(READY, flush=True)


def report(**figures: Any) -> None:
    """The one JSON line a publisher prints for the harness."""
    print(json.dumps(figures), flush=True)


def env(name: str) -> str:
    """A setting the harness passes in the environment."""
    try:
        return os.environ[name]
    except KeyError:
        sys.exit(f"{name} is not set (this program is run by python -m benchmarks)")
