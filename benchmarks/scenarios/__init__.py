"""Every scenario group, in the order the report shows them; each module holds one group."""

from __future__ import annotations

from benchmarks.harness import Case, Group
from benchmarks.scenarios import dlq, drain, latency, memory, publish, retry, startup

MODULES = (drain, publish, latency, memory, retry, startup, dlq)


def groups() -> list[Group]:
    return [m.GROUP for m in MODULES]


def all_cases() -> list[Case]:
    return [case for m in MODULES for case in m.cases()]
