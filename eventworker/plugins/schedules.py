"""The schedules a worker emits: its plugins' declarations and ``[[schedules]]``, checked."""

from __future__ import annotations

from collections.abc import Iterable

from eventworker.errors import RegistryError
from eventworker.plugins.discovery import Registration
from eventworker.schedules import Schedule
from eventworker.settings import Settings

#: Where a schedule from the settings is said to come from.
SETTINGS_SOURCE = "settings [[schedules]]"


def from_settings(settings: Settings) -> list[Schedule]:
    """The ``[[schedules]]`` entries as schedules.

    Raises:
        RegistryError: an entry with a bad cron expression, timezone, routing key or data,
            named (exit code 4, as a plugin's bad schedule).
    """
    found = []
    for entry in settings.schedules:
        try:
            found.append(Schedule(**entry.model_dump(), source=SETTINGS_SOURCE))
        except ValueError as exc:
            raise RegistryError(f"{SETTINGS_SOURCE}: {exc}") from None
    return found


def gather(registrations: Iterable[Registration], settings: Settings) -> list[Schedule]:
    """Every schedule of the plugins these handlers come from, then those of the settings.

    Raises:
        RegistryError: a bad ``[[schedules]]`` entry, or two schedules share a name (both
            sources named).
    """
    plugins = {r.plugin.entry_point: r.plugin for r in registrations}
    found = [s for p in plugins.values() for s in p.schedules] + from_settings(settings)
    seen: dict[str, Schedule] = {}
    for item in found:
        other = seen.setdefault(item.name, item)
        if other is not item:
            raise RegistryError(
                f"schedule name {item.name!r} is declared twice: by {other.source} and by "
                f"{item.source}; give one of them another name="
            )
    return found
