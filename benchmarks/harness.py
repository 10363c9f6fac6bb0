"""The vocabulary of the suite: a :class:`Case` measured in a :class:`Bench`, grouped in a
:class:`Group` whose :class:`Metric` s the report shows, each against the group's baseline."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmarks.amqp import Broker
from benchmarks.profile import Profile
from benchmarks.venvs import Venv

#: The repository root: on PYTHONPATH of every child, so ``benchmarks`` imports everywhere.
REPO = Path(__file__).resolve().parent.parent

#: What one measurement returns: metric key -> value.
Sample = dict[str, float]


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str
    better: Literal["higher", "lower"]
    #: Whether the report shows this metric's ratio to the group's baseline.
    ratio: bool = True


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    about: str

    def case(
        self,
        name: str,
        label: str,
        measure: Callable[[Bench], Awaitable[Sample]],
        **flags: Any,
    ) -> Case:
        """A case of this group; ``flags`` are :class:`Case`'s options (``baseline=True``...)."""
        return Case(self.name, name, label, measure, **flags)


@dataclass(frozen=True, slots=True)
class Case:
    """One thing measured, once per repetition; ``id`` is ``<group>.<name>``."""

    group: str
    name: str
    label: str
    measure: Callable[[Bench], Awaitable[Sample]]
    baseline: bool = False
    #: A peer (FastStream, Dramatiq): runs only with ``--peers``.
    peer: bool = False
    #: The virtualenv under benchmarks/.venvs/ its programs run in (None: the project's).
    venv: str | None = None
    #: A feature of ``eventworker`` it needs (see ``environment.features``).
    feature: str | None = None

    @property
    def id(self) -> str:
        return f"{self.group}.{self.name}"


@dataclass
class Bench:
    """What a measurement works with: the broker, the sizes, a scratch area, the interpreters."""

    broker: Broker
    url: str
    profile: Profile
    workdir: Path
    venvs: dict[str, Venv] = field(default_factory=dict)
    features: dict[str, bool] = field(default_factory=dict)
    #: The id of the case being measured (names its scratch directories).
    current: str = "setup"
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def python(self, venv: str | None = None) -> str:
        """The interpreter of ``venv``, or the project's (the one running the harness)."""
        if venv is None:
            return sys.executable
        found = self.venvs[venv].python
        assert found is not None, f"virtualenv {venv} is not ready"
        return str(found)

    def scratch(self) -> Path:
        """A fresh directory for one measurement's logs, probe slots and config."""
        path = self.workdir / f"{next(self._serial):04d}-{self.current}"
        path.mkdir(parents=True)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child: no ``EVENTWORKER_*`` of ours leaks in (a child gets
        exactly the settings its case sets), the repository on ``PYTHONPATH``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTWORKER_", "BENCH_"))}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (extra.pop("PYTHONPATH", ""), str(REPO)) if p
        )
        env["BENCH_URL"] = self.url
        env.update(extra)
        return env
