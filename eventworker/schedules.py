"""Periodic events as plugins and settings declare them: ``schedule()``, ``Schedule`` and its ticks.

A schedule publishes ``data`` with ``routing_key`` at every tick of a cron expression, read in
``timezone``. Cron expressions are evaluated by cronsim (Debian cron's meaning, including its
handling of DST changes; an optional first field of seconds). Which worker publishes the ticks,
and how each is published once across a fleet, is the schedule emitter's business
(``worker/emitter.py``); this module only declares and computes.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from eventworker.envelope import check_routing_key

CatchUp = Literal["none", "last", "all"]
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)
#: The most missed ticks of one schedule that ``catch_up = "all"`` publishes after an outage;
#: older ones are counted missed.
MAX_CATCH_UP = 1000
#: Longest schedule name: it is part of every tick's message id (a short string on the wire).
MAX_NAME = 200
#: The most ticks of one outage counted (the ``missed`` metric); counting is a walk over them.
COUNT_LIMIT = 100_000

T = TypeVar("T")

#: Schedules declared with ``@schedule`` on a function or handler, by module: module-level
#: ``Schedule`` objects are found by looking at the module, decorations by this record.
_DECORATIONS: dict[str, list[Schedule]] = {}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (an IANA name: UTC, Europe/Berlin)") from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One periodic event: ``routing_key`` with ``data`` at each tick of ``cron`` in
    ``timezone``. ``source`` says where it was declared (a plugin, or the settings)."""

    name: str
    cron: str
    routing_key: str
    data: Any = None
    timezone: str = "UTC"
    catch_up: CatchUp = "last"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        """Raises ValueError naming the schedule and what is wrong with it."""
        what = f"schedule {self.name!r}"
        if not self.name or len(self.name) > MAX_NAME or not self.name.isprintable():
            raise ValueError(f"{what}: a name is 1 to {MAX_NAME} printable characters")
        try:
            check_routing_key(self.routing_key)
            _zone(self.timezone)
            if self.catch_up not in CATCH_UP_POLICIES:
                raise ValueError(f"catch_up {self.catch_up!r}: expected none, last or all")
            orjson.dumps(self.data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what}: {exc}") from None
        try:
            CronSim(self.cron, datetime.now(UTC))
        except CronSimError as exc:
            raise ValueError(
                f"{what}: bad cron expression {self.cron!r}: {exc} (five fields, or six with "
                f"seconds first: '*/15 * * * * *')"
            ) from None

    def __call__(self, target: T) -> T:
        """``@schedule(...)`` above a function or a ``@handler``: declares the schedule in the
        target's module and returns the target unchanged."""
        # A @handler's module is its function's (the Handler object's class lives elsewhere).
        module = getattr(getattr(target, "func", None), "__module__", None) or getattr(
            target, "__module__", ""
        )
        _DECORATIONS.setdefault(module or "", []).append(self)
        return target

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def ticks_after(self, moment: datetime) -> Iterator[datetime]:
        """The ticks strictly after ``moment`` (an aware datetime), in UTC, in order."""
        zone = ZoneInfo(self.timezone)
        for tick in CronSim(self.cron, moment.astimezone(zone)):
            yield tick.astimezone(UTC)

    def next_times(self, count: int, after: datetime) -> list[datetime]:
        """The next ``count`` ticks after ``after`` (fewer when the expression ends)."""
        times = []
        for tick in self.ticks_after(after):
            times.append(tick)
            if len(times) >= count:
                break
        return times

    def ticks_between(
        self, start: datetime, end: datetime, limit: int
    ) -> tuple[list[datetime], int]:
        """The latest ``limit`` ticks ``t`` with ``start < t <= end``, oldest first, and how
        many ticks that interval holds (counted up to :data:`COUNT_LIMIT`).

        The ticks are those of :meth:`ticks_after` (cronsim forwards, which defines DST
        changes); a backward pass only finds where the latest ``limit`` begin, so that a long
        outage of an every-second schedule is not walked tick by tick from its start.
        """
        # Backwards from just after ``end``: cronsim then yields ticks up to ``end`` itself.
        latest = end.astimezone(self.zone).replace(microsecond=1)
        count, anchor = 0, start
        for local in CronSim(self.cron, latest, reverse=True):
            tick = local.astimezone(UTC)
            if tick <= start or count >= COUNT_LIMIT:
                break
            count += 1
            if count == limit + 1:
                anchor = tick  # older than the latest ``limit``: start listing after it
        found: collections.deque[datetime] = collections.deque(maxlen=limit)
        listed = 0
        for tick in self.ticks_after(anchor):
            if tick > end:
                break
            found.append(tick)
            listed += 1
        return list(found), listed if anchor == start else max(count, listed)

    def message_id(self, tick: datetime) -> str:
        """The tick's event id: the same from every worker, ``<name>@<UTC ISO time>``."""
        return f"{self.name}@{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def schedule(
    cron: str,
    routing_key: str,
    *,
    data: Any = None,
    timezone: str = "UTC",
    name: str | None = None,
    catch_up: CatchUp = "last",
) -> Schedule:
    """Declare a periodic event in a plugin module: ``routing_key`` with ``data`` (JSON) at each
    tick of ``cron`` in ``timezone``, published once across all workers.

    Either assign it at module level (``hourly = schedule("0 * * * *", "reports.hourly")``) or
    put ``@schedule(...)`` above a function or a ``@handler``. ``name`` (default: the routing
    key) identifies it in ids and metrics; ``catch_up`` says what happens to ticks missed while
    no worker ran: ``none``, ``last`` (only the latest) or ``all`` (each, up to
    :data:`MAX_CATCH_UP`).

    Raises:
        ValueError: a bad cron expression, an unknown timezone, a bad routing key or name,
            data JSON cannot hold; when the plugin module is imported.
    """
    return Schedule(
        name=name or routing_key,
        cron=cron,
        routing_key=routing_key,
        data=data,
        timezone=timezone,
        catch_up=catch_up,
    )


def declared_in(module: Any) -> list[Schedule]:
    """The schedules a module declares: its ``Schedule`` values and its ``@schedule``
    decorations, each once, in declaration order."""
    name = getattr(module, "__name__", "")
    found = [v for v in vars(module).values() if isinstance(v, Schedule)]
    found += [s for s in _DECORATIONS.get(name, []) if all(s is not f for f in found)]
    return found
