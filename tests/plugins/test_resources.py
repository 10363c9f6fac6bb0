"""Declaring resources with ``@resource``: their type key, what can be declared, how a plugin's
resources are found, looked up from a handler's context, and faked by the test kit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from eventworker import Context, Event, handler
from eventworker.errors import RegistryError, ResourceError
from eventworker.handlers import Resource, resource
from eventworker.plugins import lifespan
from eventworker.plugins.discovery import (
    Plugin,
    Registration,
    check_resources,
    declared_resources,
    discover,
    resources_of,
)
from eventworker.testing import run_handler
from tests.support.broker import TEST_PLUGIN


class Db:
    def __init__(self, name: str = "real") -> None:
        self.name = name


class Session:
    """A client that is its own async context manager."""

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@handler("res.lookup")
async def looks_up(event: Event[object], ctx: Context) -> None:
    await ctx.publish("res.used", {"db": ctx.resource(Db).name})


def test_the_type_key_comes_from_what_the_function_yields_or_returns() -> None:
    @resource
    async def agen() -> AsyncIterator[Db]:
        yield Db()

    @resource
    async def agen2() -> AsyncGenerator[Db, None]:
        yield Db()

    @resource
    def gen() -> Iterator[Db]:
        yield Db()

    @resource
    @asynccontextmanager
    async def managed() -> AsyncIterator[Db]:
        yield Db()

    @resource
    def returns_manager() -> AbstractAsyncContextManager[Db]:
        return managed.open()  # type: ignore[return-value]

    @resource
    def session() -> Session:
        return Session()

    @resource(provides=Db, name="explicit")
    def unannotated():  # type: ignore[no-untyped-def]
        return contextlib.nullcontext(Db())

    assert {r.key for r in (agen, agen2, gen, managed, returns_manager)} == {Db}
    assert (session.key, unannotated.key, unannotated.name) == (Session, Db, "explicit")
    assert agen.name == "agen"


def test_a_resource_without_a_type_or_with_arguments_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match=r"@resource nothing: annotate what it yields"):

        @resource
        async def nothing():  # type: ignore[no-untyped-def]
            yield 1

    with pytest.raises(ValueError, match=r"@resource plain: annotate"):

        @resource
        def plain() -> Db:
            return Db()

    with pytest.raises(ValueError, match="must take no arguments"):

        @resource
        async def needs(dsn: str) -> AsyncIterator[Db]:
            yield Db(dsn)


async def test_a_factory_returning_no_context_manager_fails_to_start_naming_it() -> None:
    @resource(provides=Db)
    def bare() -> Any:
        return Db()

    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ResourceError, match=r"resource bare \(Db\) failed to start: TypeError"):
            await lifespan.enter(stack, [(bare, TEST_PLUGIN)])


async def test_a_resource_that_fails_to_stop_is_logged_and_the_others_are_still_left() -> None:
    left: list[str] = []

    @resource
    async def first() -> AsyncIterator[Db]:
        yield Db()
        left.append("first")

    @resource
    async def second() -> AsyncIterator[Session]:
        yield Session()
        raise RuntimeError("close failed")

    async with contextlib.AsyncExitStack() as stack:
        objects = await lifespan.enter(stack, [(first, TEST_PLUGIN), (second, TEST_PLUGIN)])
        assert set(objects) == {Db, Session}
    assert left == ["first"]


def test_ctx_resource_names_the_missing_type_and_the_declared_ones() -> None:
    from eventworker.testing import run_handler_sync

    outcome = run_handler_sync(looks_up, {}, resources={Session: Session()})
    assert isinstance(outcome.error, LookupError)
    assert str(outcome.error) == (
        "handler looks_up asked for resource Db, which no loaded plugin declares "
        "(declared: Session)"
    )


async def test_the_test_kit_hands_fakes_to_ctx_resource() -> None:
    outcome = await run_handler(looks_up, {}, resources={Db: Db("fake")})
    assert outcome.acked and outcome.published[0].data == {"db": "fake"}


async def test_the_test_kit_enters_and_leaves_declared_resources_around_the_handling() -> None:
    log: list[str] = []

    @resource
    async def db() -> AsyncIterator[Db]:
        log.append("enter")
        yield Db("declared")
        log.append("leave")

    outcome = await run_handler(looks_up, {}, resources=[db])
    assert outcome.published[0].data == {"db": "declared"} and log == ["enter", "leave"]


def test_a_module_declares_resources_and_a_handler_entry_point_gets_its_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_res_mod.py").write_text(
        "from collections.abc import AsyncIterator\n"
        "from eventworker import Context, Event, handler\n"
        "from eventworker import resource\n\n"
        "class Db: ...\n\n"
        "@resource\n"
        "async def db() -> AsyncIterator[Db]:\n"
        "    yield Db()\n\n"
        "alias = db\n\n"
        "@handler('res.mod')\n"
        "async def uses(event: Event[object], ctx: Context) -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_res_mod", raising=False)
    import acme_res_mod  # type: ignore[import-not-found]

    assert [r.name for r in resources_of(acme_res_mod)] == ["db"]
    assert [r.name for r in resources_of(acme_res_mod.uses)] == ["db"]
    sys.modules.pop("acme_res_mod", None)


def test_the_example_plugins_resource_is_discovered_with_its_plugin() -> None:
    found = declared_resources(discover(plugins=("demo",)))
    assert [(r.name, p.entry_point) for r, p in found] == [("mailer", "demo")]


def _resource_of(key: type[Any], name: str) -> Resource[Any]:
    return resource(provides=key, name=name)(lambda: contextlib.nullcontext(key()))


def test_two_resources_of_one_type_are_a_registry_error_naming_both() -> None:
    one = Plugin("billing", "acme.billing", "acme-billing", "1", resources=(_resource_of(Db, "a"),))
    two = Plugin("audit", "acme.audit", "acme-audit", "1", resources=(_resource_of(Db, "b"),))

    @handler("x.y")
    async def h1(event: Event[object], ctx: Context) -> None: ...

    @handler("x.z")
    async def h2(event: Event[object], ctx: Context) -> None: ...

    with pytest.raises(RegistryError) as info:
        check_resources([Registration(h1, one), Registration(h2, two)])
    assert str(info.value) == (
        "plugin 'audit' (distribution acme-audit): resource type Db is provided twice: by a "
        "(plugin 'billing') and by b (plugin 'audit'); give one of them another type"
    )
    shared = _resource_of(Db, "shared")
    same = [
        Registration(h1, Plugin("a", "m", "d", "1", resources=(shared,))),
        Registration(h2, Plugin("b", "m:h2", "d", "1", resources=(shared,))),
    ]
    check_resources(same)
    assert [r for r, _ in declared_resources(same)] == [shared]
