"""A worker for test_inflight_bytes.py: ``eventworker run`` itself (uvloop, logging, signals),
with handler discovery replaced by one handler that reads the decoded body, as a real handler
would, and writes the event's id and the length of its ``pad`` field to BYTES_LOG. An event
with ``"fail": true`` raises an error the handler gives up on: it is dead-lettered at once.

Run as ``python -m tests.support.bytes_worker`` with the EVENTWORKER_* settings in the
environment; BYTES_HOLD is how long the handler keeps each event (seconds, default 0.05).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from eventworker import Context, Event, handler
from eventworker.cli import main as eventworker_main
from eventworker.plugins import discovery
from eventworker.plugins.discovery import Registration
from tests.support.broker import registrations


class Refused(Exception):
    """A failure the handler gives up on."""


@handler("bytes.#", name="bytes", give_up_on=(Refused,))
async def sized(event: Event[Any], ctx: Context) -> None:
    size = len(event.data.get("pad", ""))
    await asyncio.sleep(float(os.environ.get("BYTES_HOLD", "0.05")))
    if event.data.get("fail"):
        raise Refused(f"{event.id} refused")
    await asyncio.to_thread(_log, f"{event.id} {size}\n")


def _log(line: str) -> None:
    with open(os.environ["BYTES_LOG"], "a") as log:
        log.write(line)


def main() -> None:
    def discover(**_: Any) -> list[Registration]:
        return registrations(sized)

    discovery.discover = discover  # the one seam replaced
    eventworker_main(["run"], prog_name="eventworker")


if __name__ == "__main__":
    main()
