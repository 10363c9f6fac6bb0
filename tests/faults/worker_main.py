"""A worker process with the test handlers: ``eventworker run`` itself, with handler
discovery replaced by the handlers of a spec file (test handlers are not an installed plugin).

    python -m tests.faults.worker_main --ledger L --spec S.json [--sleep-scale X]
        [--audit-log F] -- [eventworker run options]

Settings come from the ``EVENTWORKER_*`` environment, as for the real command; exit codes,
signals and logging are the real command's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eventworker.cli import main as eventworker_main
from eventworker.plugins import discovery
from eventworker.plugins.discovery import Plugin, Registration
from tests.faults.ledger import Ledger
from tests.faults.plugin import Spec, build

#: How the test handlers show in the start-up log ("handler X from tests-faults 0 ...").
PLUGIN = Plugin(
    entry_point="faults", value="tests.faults.plugin", distribution="tests-faults", version="0"
)
#: The audit event of an unpickling that resolves a global (reliability guide F2). Not
#: ``marshal.loads``: every import of a compiled module raises that one.
UNSAFE_AUDIT_EVENTS = ("pickle.find_class",)


def _audit_to(path: Path) -> None:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in UNSAFE_AUDIT_EVENTS:
            with path.open("a") as out:
                out.write(f"{event} {args!r:.200}\n")

    sys.addaudithook(hook)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="worker_main")
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--sleep-scale", type=float, default=1.0)
    parser.add_argument("--audit-log")
    parser.add_argument("run_args", nargs="*")
    options = parser.parse_args(argv)
    if options.audit_log:
        _audit_to(Path(options.audit_log))
    ledger = Ledger(options.ledger)
    specs = [Spec.from_json(raw) for raw in json.loads(Path(options.spec).read_text())]
    registrations = [
        Registration(build(s, ledger, sleep_scale=options.sleep_scale), PLUGIN) for s in specs
    ]

    def discover(**_: Any) -> list[Registration]:
        return registrations

    discovery.discover = discover  # the one seam we replace
    eventworker_main(["run", *options.run_args], prog_name="eventworker")


if __name__ == "__main__":
    main(sys.argv[1:])
