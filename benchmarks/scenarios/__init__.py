"""Every scenario group, in the order the report shows them; each module holds one group."""

from __future__ import annotations

from benchmarks.harness import Case, Group
from benchmarks.scenarios import (
    delay,
    dlq,
    drain,
    features,
    latency,
    memory,
    publish,
    retry,
    startup,
    waiting,
)

MODULES = (drain, publish, latency, memory, retry, delay, startup, dlq, features, waiting)


def groups() -> list[Group]:
    return [m.GROUP for m in MODULES]


def all_cases() -> list[Case]:
    return [case for m in MODULES for case in m.cases()]
