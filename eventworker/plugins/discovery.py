"""Handler discovery from the ``eventworker.handlers`` entry-point group, and its validation.

A plugin's entry point names a module (every handler and resource defined in it) or one handler
object (with the resources of the module it lives in). Everything that can be wrong with a
plugin is found here, before the worker connects.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, distributions, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from eventworker.errors import RegistryError
from eventworker.handlers import Handler, Middleware, Resource
from eventworker.observability.logs import one_line
from eventworker.schedules import Schedule, declared_in

#: The entry-point group plugins register their handlers under.
GROUP = "eventworker.handlers"
#: The entry-point group of middleware; the ``middleware`` setting enables them, in order.
MIDDLEWARE_GROUP = "eventworker.middleware"


@dataclass(frozen=True, slots=True)
class Plugin:
    """Where handlers came from: the entry point and its installed distribution, and the
    resources its module declares (entered by the worker while one of its handlers runs)."""

    entry_point: str
    value: str
    distribution: str
    version: str
    resources: tuple[Resource[Any], ...] = ()
    #: The periodic events its module declares (``schedule()``, ``@schedule``).
    schedules: tuple[Schedule, ...] = ()


@dataclass(frozen=True, slots=True)
class Registration:
    handler: Handler
    plugin: Plugin


def _plugin(ep: EntryPoint) -> Plugin:
    dist = ep.dist
    return Plugin(
        entry_point=ep.name,
        value=ep.value,
        distribution=dist.name if dist else "?",
        version=dist.version if dist else "?",
    )


def _from_working_directory(ep: EntryPoint) -> bool:
    """True for a distribution whose metadata lies in the current directory.

    Python puts the working directory on ``sys.path`` under ``python -m``, so a stray
    ``*.dist-info`` there would otherwise register handlers: only installed distributions count.
    """
    if ep.dist is None:
        return False
    try:
        location = Path(str(ep.dist.locate_file(""))).resolve()
    except (OSError, NotImplementedError):
        return False
    return location == Path.cwd().resolve() and str(location) not in _site_dirs()


def _stray_entry_points(group: str) -> list[EntryPoint]:
    """The entry points of distributions lying in the working directory when it is not on
    ``sys.path`` (``python -m eventworker`` takes it off): listed as ignored all the same, so
    that ``eventworker plugins`` shows the same whichever way it is run."""
    cwd = Path.cwd().resolve()
    if any(Path(p or ".").resolve() == cwd for p in sys.path):
        return []  # entry_points() sees them already
    return [
        ep
        for dist in distributions(path=[str(cwd)])
        for ep in dist.entry_points
        if ep.group == group
    ]


def _site_dirs() -> set[str]:
    return {str(Path(p).resolve()) for p in sys.path if p and "-packages" in p}


def resources_of(obj: object) -> tuple[Resource[Any], ...]:
    """The resources a module declares (each once); for a handler, those of its module."""
    if isinstance(obj, Handler):
        obj = sys.modules.get(obj.module)
    if not isinstance(obj, ModuleType):
        return ()
    return tuple({id(v): v for v in vars(obj).values() if isinstance(v, Resource)}.values())


def handlers_of(obj: object, plugin: Plugin) -> list[Handler]:
    """The handlers an entry point's object stands for.

    Raises:
        RegistryError: it is neither a Handler nor a module defining at least one.
    """
    if isinstance(obj, Handler):
        return [obj]
    if isinstance(obj, ModuleType):
        found = {id(v): v for v in vars(obj).values() if isinstance(v, Handler)}
        if found:
            return list(found.values())
        raise RegistryError(
            f"module {obj.__name__} defines no @handler",
            entry_point=plugin.entry_point,
            distribution=plugin.distribution,
        )
    raise RegistryError(
        f"{plugin.value} is a {type(obj).__name__}, not a @handler or a module",
        entry_point=plugin.entry_point,
        distribution=plugin.distribution,
    )


def _plugin_root(module: str) -> tuple[Path, Path] | None:
    """(the plugin's top-level package directory or single module file, the directory that
    holds it), found without importing anything; None when it cannot be found."""
    try:
        spec = importlib.util.find_spec(module.partition(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))).resolve()
    elif spec.origin:
        root = Path(spec.origin).resolve()
    else:
        return None
    return root, root.parent


def failure_location(exc: BaseException, module: str) -> str:
    """``file:line`` of the last frame inside the plugin when importing ``module`` raised
    ``exc`` (a syntax error: where it is), the file relative to the directory holding the
    plugin's top-level package; empty when no frame lies inside the plugin."""
    found = _plugin_root(module)
    if found is None:
        return ""
    root, base = found

    def inside(filename: str | None) -> Path | None:
        if not filename:
            return None
        path = Path(filename).resolve()
        return path if path == root or root in path.parents else None

    if isinstance(exc, SyntaxError) and (path := inside(exc.filename)) and exc.lineno:
        return f"{path.relative_to(base)}:{exc.lineno}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if (path := inside(frame.filename)) is not None:
            return f"{path.relative_to(base)}:{frame.lineno}"
    return ""


def _import(ep: EntryPoint, plugin: Plugin, what: str) -> Any:
    """Import the object ``ep`` names.

    Raises:
        RegistryError: the import failed; the message names ``what`` it is, the entry point,
            and the plugin's file and line where it failed.
    """
    try:
        return ep.load()
    except Exception as exc:
        where = failure_location(exc, ep.module)
        raise RegistryError(
            f"cannot load {what}{ep.value}{f', at {where}' if where else ''}: "
            f"{type(exc).__name__}: {one_line(exc, 500)}",
            entry_point=ep.name,
            distribution=plugin.distribution,
        ) from exc


def load(ep: EntryPoint) -> list[Registration]:
    """Import one entry point and return its handlers.

    Raises:
        RegistryError: the import failed (a bad binding key or handler signature raises while
            importing, too) or it names no handler; the message names the entry point, its
            distribution and the plugin's file and line where the import failed.
    """
    plugin = _plugin(ep)
    obj = _import(ep, plugin, "")
    handlers = handlers_of(obj, plugin)
    found = resources_of(obj)
    if found:
        plugin = replace(plugin, resources=found)
    module = sys.modules.get(obj.module) if isinstance(obj, Handler) else obj
    if isinstance(module, ModuleType) and (declared := declared_in(module)):
        where = f"plugin {plugin.entry_point!r}"
        plugin = replace(plugin, schedules=tuple(replace(s, source=where) for s in declared))
    return [Registration(h, plugin) for h in handlers]


def discover(
    *, plugins: Sequence[str] = (), names: Sequence[str] = (), group: str = GROUP
) -> list[Registration]:
    """Every enabled handler of every installed plugin, validated.

    ``plugins`` limits to those entry-point names and ``names`` to those handler names (empty:
    all). Naming one that does not exist is an error rather than a silently smaller worker.

    Raises:
        RegistryError: a plugin failed to load, an unknown plugin or handler was asked for,
            or two handlers share a name or a queue.
    """
    eps = [ep for ep in entry_points(group=group) if not _from_working_directory(ep)]
    unknown = set(plugins) - {ep.name for ep in eps}
    if unknown:
        raise RegistryError(
            f"no installed plugin named {', '.join(sorted(unknown))} in entry-point group {group!r}"
        )
    registrations = [r for ep in eps if not plugins or ep.name in plugins for r in load(ep)]
    check_unique(registrations)
    check_resources(registrations)
    if names:
        missing = set(names) - {r.handler.name for r in registrations}
        if missing:
            raise RegistryError(f"no enabled handler named {', '.join(sorted(missing))}")
        registrations = [r for r in registrations if r.handler.name in names]
    return registrations


def check_unique(registrations: Iterable[Registration]) -> None:
    """Raises RegistryError when two handlers share a name (or an explicit queue)."""
    seen: dict[str, Registration] = {}
    for reg in registrations:
        for key in (f"name {reg.handler.name!r}", f"queue {reg.handler.queue!r}"):
            if key.startswith("queue") and reg.handler.queue is None:
                continue
            other = seen.setdefault(key, reg)
            if other is not reg:
                raise RegistryError(
                    f"handler {key} is defined twice: by plugin {other.plugin.entry_point!r} "
                    f"({other.plugin.distribution}) and by plugin {reg.plugin.entry_point!r} "
                    f"({reg.plugin.distribution}); set name= (or queue=) on one of them",
                    entry_point=reg.plugin.entry_point,
                    distribution=reg.plugin.distribution,
                )


def declared_resources(registrations: Iterable[Registration]) -> list[tuple[Resource[Any], Plugin]]:
    """The resources of the plugins these handlers come from, each once, in plugin order."""
    seen: dict[int, tuple[Resource[Any], Plugin]] = {}
    for reg in registrations:
        for res in reg.plugin.resources:
            seen.setdefault(id(res), (res, reg.plugin))
    return list(seen.values())


def check_resources(registrations: Iterable[Registration]) -> None:
    """Raises RegistryError when two resources provide one type: ``ctx.resource(T)`` would
    not know which to return."""
    by_key: dict[type[Any], tuple[Resource[Any], Plugin]] = {}
    for res, plugin in declared_resources(registrations):
        other = by_key.setdefault(res.key, (res, plugin))
        if other[0] is not res:
            raise RegistryError(
                f"resource type {res.key.__qualname__} is provided twice: by {other[0].name} "
                f"(plugin {other[1].entry_point!r}) and by {res.name} (plugin "
                f"{plugin.entry_point!r}); give one of them another type",
                entry_point=plugin.entry_point,
                distribution=plugin.distribution,
            )


def load_middleware(names: Sequence[str], *, group: str = MIDDLEWARE_GROUP) -> list[Middleware]:
    """The middleware ``names`` enable, in that order (the first is the outermost): each entry
    point names a ``Middleware`` subclass (made with no arguments) or instance.

    Raises:
        RegistryError: a name twice, one that is not installed, one that fails to import (with
            its file and line) or names something else.
    """
    if not names:
        return []
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RegistryError(f"middleware {', '.join(twice)} named twice in the middleware setting")
    eps = {ep.name: ep for ep in entry_points(group=group) if not _from_working_directory(ep)}
    unknown = [n for n in names if n not in eps]
    if unknown:
        raise RegistryError(
            f"no installed middleware named {', '.join(unknown)} in entry-point group {group!r}"
        )
    chain = []
    for name in names:
        ep = eps[name]
        plugin = _plugin(ep)
        obj = _import(ep, plugin, "middleware ")
        if isinstance(obj, type) and issubclass(obj, Middleware):
            try:
                obj = obj()
            except Exception as exc:
                raise RegistryError(
                    f"middleware {ep.value} cannot be made without arguments: "
                    f"{type(exc).__name__}: {one_line(exc, 300)}",
                    entry_point=ep.name,
                    distribution=plugin.distribution,
                ) from exc
        if not isinstance(obj, Middleware):
            raise RegistryError(
                f"{ep.value} is a {type(obj).__name__}, not a Middleware subclass or instance",
                entry_point=ep.name,
                distribution=plugin.distribution,
            )
        chain.append(obj)
    return chain


@dataclass(frozen=True, slots=True)
class Availability:
    """An entry point of the group and whether the worker would load it, without importing it."""

    plugin: Plugin
    status: str


def survey(*, plugins: Sequence[str] = (), group: str = GROUP) -> list[Availability]:
    """Every entry point of ``group`` with its status: ``enabled``, ``available, not enabled``
    (an allowlist is set and does not name it) or ``ignored (untrusted location)`` (metadata
    in the working directory). Imports no plugin code."""
    rows = []
    for ep in [*entry_points(group=group), *_stray_entry_points(group)]:
        if _from_working_directory(ep):
            status = "ignored (untrusted location: the working directory)"
        elif plugins and ep.name not in plugins:
            status = "available, not enabled"
        else:
            status = "enabled"
        rows.append(Availability(_plugin(ep), status))
    return sorted(rows, key=lambda r: (r.plugin.entry_point, r.plugin.distribution))
