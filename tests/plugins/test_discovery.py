"""Handler discovery from installed distributions, and everything that makes a plugin unusable.

The example plugin (``examples/plugin``) is installed in the virtualenv as the distribution
``eventworker-example``, with the entry points ``demo`` (a module) and ``audit`` (one handler).
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventworker import Context, Event, Handler, handler
from eventworker.errors import ExitCode, RegistryError
from eventworker.plugins.discovery import (
    GROUP,
    Plugin,
    Registration,
    check_unique,
    discover,
    handlers_of,
    load,
)

EXAMPLE = "eventworker-example"
#: The handlers the issue asks the example plugin for (success, retry, dead letter, a model,
#: its follow-up, and one entry point naming a single handler); it may define more.
REQUIRED_HANDLERS = {
    "greet": "demo",
    "flaky": "demo",
    "broken": "demo",
    "bill_order": "demo",
    "record_charge": "demo",
    "audit_orders": "audit",
}


def _example_handlers() -> dict[str, str]:
    """Handler name -> entry point, read from the example plugin's source, not from metadata."""
    handlers = importlib.import_module("eventworker_example.handlers")
    audit = importlib.import_module("eventworker_example.audit")
    demo = {v.name: "demo" for v in vars(handlers).values() if isinstance(v, Handler)}
    return demo | {audit.audit_orders.name: "audit"}


def _plugin(entry_point: str = "ep", distribution: str = "acme-dist") -> Plugin:
    return Plugin(
        entry_point=entry_point, value="acme.handlers", distribution=distribution, version="1.0"
    )


def _handler(name: str, queue: str | None = None) -> Any:
    @handler("a.b", name=name, queue=queue)
    async def func(event: Event[Any], ctx: Context) -> None: ...

    return func


def _conflict(registrations: list[Registration]) -> str | None:
    """The text check_unique refuses ``registrations`` with, or None when they are unique."""
    try:
        check_unique(registrations)
    except RegistryError as exc:
        return str(exc)
    return None


def _fake_distribution(root: Path, entry_points: str, name: str = "acme-dist") -> PathDistribution:
    """A distribution's metadata on disk, without putting it on sys.path."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry_points}\n")
    return PathDistribution(info)


def _entry_point(dist: PathDistribution, name: str) -> EntryPoint:
    return dist.entry_points.select(group=GROUP)[name]


# discovery of the installed example plugin


def test_every_handler_of_the_installed_example_plugin_is_discovered() -> None:
    found = {r.handler.name: r.plugin for r in discover() if r.plugin.distribution == EXAMPLE}
    assert {name: p.entry_point for name, p in found.items()} == _example_handlers()
    assert REQUIRED_HANDLERS.items() <= {n: p.entry_point for n, p in found.items()}.items()
    assert {p.version for p in found.values()} == {"0.1.0"}


def test_a_module_entry_point_yields_every_handler_it_defines_once() -> None:
    names = [r.handler.name for r in discover(plugins=("demo",))]
    assert sorted(names) == sorted(n for n, ep in _example_handlers().items() if ep == "demo")


def test_limiting_to_a_plugin_discovers_only_its_handlers() -> None:
    [registration] = discover(plugins=("audit",))
    assert (
        registration.handler.name,
        registration.plugin.entry_point,
        registration.plugin.value,
    ) == ("audit_orders", "audit", "eventworker_example.audit:audit_orders")


def test_limiting_to_a_handler_name_discovers_only_that_handler() -> None:
    [registration] = discover(names=("greet",))
    assert (
        registration.handler.name,
        registration.handler.bindings,
        registration.plugin.distribution,
    ) == ("greet", ("demo.greet",), EXAMPLE)


def test_an_unknown_plugin_name_is_a_registry_error_naming_it() -> None:
    with pytest.raises(RegistryError, match="no-such-plugin") as info:
        discover(plugins=("audit", "no-such-plugin"))
    assert info.value.exit_code == ExitCode.PLUGIN


def test_an_unknown_handler_name_is_a_registry_error_naming_it() -> None:
    with pytest.raises(RegistryError, match="no_such_handler"):
        discover(names=("greet", "no_such_handler"))


def test_a_handler_name_outside_the_enabled_plugins_is_unknown() -> None:
    with pytest.raises(RegistryError, match="greet"):
        discover(plugins=("audit",), names=("greet",))


def test_an_empty_entry_point_group_discovers_nothing() -> None:
    assert discover(group="eventworker.no-such-group") == []


# handlers_of


def test_handlers_of_a_handler_is_that_handler() -> None:
    one = _handler("one")
    assert handlers_of(one, _plugin()) == [one]


def test_handlers_of_a_module_are_its_handlers_each_once() -> None:
    module = ModuleType("acme.handlers")
    one, two = _handler("one"), _handler("two")
    module.one, module.two, module.alias = one, two, one  # type: ignore[attr-defined]
    assert handlers_of(module, _plugin()) == [one, two]


def test_a_module_without_handlers_is_a_registry_error_naming_plugin_and_distribution() -> None:
    with pytest.raises(RegistryError, match="defines no @handler") as info:
        handlers_of(ModuleType("acme.empty"), _plugin("billing", "acme-billing"))
    assert "'billing'" in str(info.value)
    assert "acme-billing" in str(info.value)
    assert (info.value.entry_point, info.value.distribution) == ("billing", "acme-billing")


@pytest.mark.parametrize("obj", [len, "text", 42, object()])
def test_an_object_that_is_no_handler_is_a_registry_error_naming_plugin_and_distribution(
    obj: object,
) -> None:
    with pytest.raises(RegistryError, match="not a @handler or a module") as info:
        handlers_of(obj, _plugin("billing", "acme-billing"))
    assert (info.value.entry_point, info.value.distribution) == ("billing", "acme-billing")
    assert "acme-billing" in str(info.value)


# load


def test_a_plugin_whose_module_does_not_exist_is_a_registry_error_naming_it(tmp_path: Path) -> None:
    dist = _fake_distribution(tmp_path, "billing = acme_no_such_module_xyz.handlers")
    with pytest.raises(RegistryError, match="ModuleNotFoundError") as info:
        load(_entry_point(dist, "billing"))
    assert (info.value.entry_point, info.value.distribution) == ("billing", "acme-dist")
    assert "'billing'" in str(info.value)
    assert "acme-dist" in str(info.value)


def test_a_plugin_whose_import_raises_is_a_registry_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "acme_bad_key_plugin.py").write_text(
        "from eventworker import handler\n\n"
        "@handler('orders.*created')\n"
        "async def bill(event, ctx):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "acme_bad_key_plugin", raising=False)
    dist = _fake_distribution(tmp_path / "meta", "billing = acme_bad_key_plugin")
    with pytest.raises(RegistryError, match=r"orders\.\*created") as info:
        load(_entry_point(dist, "billing"))
    assert (info.value.entry_point, info.value.distribution) == ("billing", "acme-dist")
    sys.modules.pop("acme_bad_key_plugin", None)


def test_a_plugin_whose_attribute_does_not_exist_is_a_registry_error(tmp_path: Path) -> None:
    dist = _fake_distribution(tmp_path, "billing = eventworker_example.handlers:no_such_thing")
    with pytest.raises(RegistryError, match="no_such_thing") as info:
        load(_entry_point(dist, "billing"))
    assert info.value.distribution == "acme-dist"


def test_an_entry_point_without_a_distribution_is_named_with_an_unknown_one() -> None:
    ep = EntryPoint(name="loose", value="acme_no_such_module_xyz", group=GROUP)
    with pytest.raises(RegistryError, match="'loose'") as info:
        load(ep)
    assert info.value.distribution == "?"


def test_load_returns_registrations_tagged_with_their_plugin(tmp_path: Path) -> None:
    dist = _fake_distribution(tmp_path, "one = eventworker_example.audit:audit_orders")
    [registration] = load(_entry_point(dist, "one"))
    assert registration.handler.name == "audit_orders"
    assert registration.plugin == Plugin(
        entry_point="one",
        value="eventworker_example.audit:audit_orders",
        distribution="acme-dist",
        version="1.0",
    )


# check_unique


def test_two_handlers_with_one_name_are_a_registry_error_naming_both_plugins() -> None:
    first = Registration(_handler("bill"), _plugin("billing", "acme-billing"))
    second = Registration(_handler("bill"), _plugin("invoicing", "acme-invoicing"))
    with pytest.raises(RegistryError) as info:
        check_unique([first, second])
    text = str(info.value)
    assert all(
        part in text
        for part in ("'bill'", "'billing'", "acme-billing", "'invoicing'", "acme-invoicing")
    )


def test_two_handlers_with_one_explicit_queue_are_a_registry_error() -> None:
    first = Registration(_handler("bill", queue="shared"), _plugin("billing"))
    second = Registration(_handler("invoice", queue="shared"), _plugin("invoicing"))
    with pytest.raises(RegistryError, match="'shared'"):
        check_unique([first, second])


def test_handlers_with_distinct_names_and_default_queues_are_unique() -> None:
    registrations = [Registration(_handler(n), _plugin()) for n in ("a", "b", "c")]
    assert _conflict(registrations) is None


def test_the_same_registration_twice_is_not_a_conflict_with_itself() -> None:
    registration = Registration(_handler("bill", queue="billing"), _plugin())
    assert _conflict([registration, registration]) is None


# a stray distribution in the working directory (H3)


@pytest.mark.parametrize("path_entry", ["absolute", "empty"])
def test_a_dist_info_in_the_working_directory_is_not_discovered_nor_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_entry: str
) -> None:
    # `python -m` and `python -c` put the working directory on sys.path (as a path or as "").
    sentinel = tmp_path / "imported"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "evil_plugin_h3.py").write_text(
        "from pathlib import Path\n"
        "from eventworker import handler\n"
        f"Path({str(sentinel)!r}).write_text('imported')\n\n"
        "@handler('#')\n"
        "async def evil(event, ctx):\n"
        "    pass\n"
    )
    info = cwd / "evil-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nevil = evil_plugin_h3\n")
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd) if path_entry == "absolute" else "")
    monkeypatch.delitem(sys.modules, "evil_plugin_h3", raising=False)

    registrations = discover()
    with pytest.raises(RegistryError, match="evil"):
        discover(plugins=("evil",))

    assert "evil" not in {r.plugin.entry_point for r in registrations}
    assert "evil" not in {r.plugin.distribution for r in registrations}
    assert {r.handler.name for r in registrations} >= set(REQUIRED_HANDLERS)
    assert "evil_plugin_h3" not in sys.modules
    assert not sentinel.exists()


def test_the_stray_dist_info_is_really_visible_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the test above: without the registry's filter the plugin would be found.
    from importlib.metadata import entry_points

    info = tmp_path / "evil-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nevil = evil_plugin_h3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "evil" in {ep.name for ep in entry_points(group=GROUP)}
