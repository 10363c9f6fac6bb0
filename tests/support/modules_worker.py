"""``eventworker run`` as an operator starts it, which writes the names of every module it
imported (``sys.modules``, as a JSON list) to ``$MODULES_OUT`` when it exits.

Run as ``python -m tests.support.modules_worker`` with the EVENTWORKER_* settings in the
environment.
"""

from __future__ import annotations

import atexit
import json
import os
import sys


def _write() -> None:
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)


def main() -> None:
    atexit.register(_write)
    from eventworker.cli import main as eventworker

    eventworker(["run"], prog_name="eventworker")


if __name__ == "__main__":
    main()
