"""A worker for test_acks.py: the handler of an event with ``{"hang": true}`` never returns,
every other one returns at once after writing its id to ACK_LOG.

Run as ``python -m tests.support.ack_worker`` with the EVENTWORKER_* settings in the environment.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from eventworker import Context, Event, handler
from eventworker.settings import load_settings
from eventworker.worker.lifecycle import Worker
from tests.support.broker import registrations


@handler("acks.#", name="acky")
def acky(event: Event[Any], ctx: Context) -> None:
    if event.data.get("hang"):
        threading.Event().wait()  # its thread never returns; the test kills the process
    with open(os.environ["ACK_LOG"], "a") as log:
        log.write(f"{event.id}\n")


def main() -> None:
    asyncio.run(Worker(registrations(acky), load_settings()).run(handle_signals=True))


if __name__ == "__main__":
    main()
