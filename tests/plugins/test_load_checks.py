"""What is checked when a plugin is loaded: the handler's signature, the model inferred from its
``Event[Model]`` annotation, and where a plugin's import failed (file and line)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from eventworker import Context, Event, handler
from eventworker.errors import ExitCode, RegistryError
from eventworker.handlers import EXPECTED_FORM
from eventworker.plugins.discovery import GROUP, load
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for
from tests.support.cli import EVENTWORKER, env_for
from tests.support.distributions import entry_point, install

if TYPE_CHECKING:
    from decimal import Decimal  # never imported at run time: unresolvable on purpose


class Order(BaseModel):
    order_id: str


class SpecialOrder(Order):
    priority: int = 0


class Refund(BaseModel):
    amount: float


# the signature


@pytest.mark.parametrize(
    ("source", "takes"),
    [
        ("async def f(payload): ...", "(payload)"),
        ("async def f(): ...", "()"),
        ("def f(event, ctx, extra): ...", "(event, ctx, extra)"),
        ("async def f(*, event, ctx): ...", "(*, event, ctx)"),
    ],
)
def test_a_handler_that_cannot_take_event_and_ctx_is_refused_naming_the_expected_form(
    source: str, takes: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ValueError) as info:
        handler("a.b", name="send_mail")(namespace["f"])
    assert str(info.value) == f"@handler send_mail: takes {takes}; expected {EXPECTED_FORM}"
    assert EXPECTED_FORM == "(event: Event[Model], ctx: Context)"


def test_a_generator_handler_is_refused() -> None:
    with pytest.raises(ValueError, match=r"@handler gen: a generator function never runs"):

        @handler("a.b")
        async def gen(event: Event[Any], ctx: Context):  # type: ignore[no-untyped-def]
            yield


def test_handlers_that_can_be_called_with_event_and_ctx_are_accepted() -> None:
    def extra(event: Event[Any], ctx: Context, retries: int = 3) -> None: ...

    def variadic(*args: Any) -> None: ...

    assert handler("a.b")(extra).name == "extra"
    assert handler("a.b")(variadic).model is None


# the model


def test_the_model_is_inferred_from_an_event_annotation_resolved_from_a_string() -> None:
    @handler("orders.created")
    async def bill(event: Event[Order], ctx: Context) -> None: ...

    assert bill.func.__annotations__["event"] == "Event[Order]", "a string annotation"
    assert bill.model is Order


def test_a_model_defined_next_to_the_handler_in_a_function_is_inferred() -> None:
    class Local(BaseModel):
        n: int

    @handler("local.event")
    async def uses(event: Event[Local], ctx: Context) -> None: ...

    assert uses.model is Local


def test_no_model_is_inferred_from_data_that_is_no_model() -> None:
    @handler("a.b")
    async def plain(event: Event[dict[str, Any]], ctx: Context) -> None: ...

    @handler("a.b")
    async def anything(event: Event[Any], ctx: Context) -> None: ...

    @handler("a.b")
    async def bare(event, ctx):  # type: ignore[no-untyped-def]
        ...

    assert (plain.model, anything.model, bare.model) == (None, None, None)


def test_an_explicit_model_wins_and_may_be_a_subclass_of_the_annotated_one() -> None:
    @handler("a.b", model=SpecialOrder)
    async def special(event: Event[Order], ctx: Context) -> None: ...

    @handler("a.b", model=Order)
    async def untyped(event: Event[Any], ctx: Context) -> None: ...

    assert (special.model, untyped.model) == (SpecialOrder, Order)


def test_a_model_contradicting_the_annotation_is_refused() -> None:
    with pytest.raises(ValueError) as info:

        @handler("refunds.created", model=Refund)
        async def refund(event: Event[Order], ctx: Context) -> None: ...

    assert str(info.value) == (
        "@handler refund: model=Refund contradicts the annotation Event[Order] of event; drop "
        "model= (it is inferred) or make them agree"
    )


def test_a_model_annotated_without_event_is_refused() -> None:
    with pytest.raises(ValueError, match=r"event is annotated Order, but a handler gets an Event"):

        @handler("a.b")
        async def wrong(event: Order, ctx: Context) -> None: ...


def test_an_unresolvable_annotation_is_refused_unless_model_is_given() -> None:
    with pytest.raises(ValueError, match=r"cannot resolve the annotation 'Event\[Decimal\]'"):

        @handler("a.b")
        async def hidden(event: Event[Decimal], ctx: Context) -> None: ...

    @handler("a.b", model=Order)
    async def given(event: Event[Decimal], ctx: Context) -> None: ...

    assert given.model is Order


async def test_an_inferred_model_validates_deliveries_in_a_worker(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Any] = []

    @handler("inferred.order")
    async def bill(event: Event[Order], ctx: Context) -> None:
        seen.append(event.data)

    async with running(broker, [bill], settings) as worker:
        queue = worker.routes[0].queue
        await broker.publish("inferred.order", b'{"order_id": "o-1"}', message_id="good")
        await broker.publish("inferred.order", b'{"total": 3}', message_id="bad")
        await broker.wait_count(f"{queue}.dead", 1)
        await wait_for(lambda: len(seen) == 1)
    assert seen == [Order(order_id="o-1")]
    [dead] = await broker.take_all(f"{queue}.dead", expect=1)
    assert dead.headers["x-eventworker-reason"] == "schema_error"


# where a plugin's import failed


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for plugin packages written by the test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        if name.startswith("acme_"):
            del sys.modules[name]


def _install(site: Path, module: str, source: str) -> EntryPoint:
    """Module ``module`` with ``source`` in distribution ``acme-dist``, whose entry point
    ``billing`` names it."""
    dist = install(
        site,
        distribution="acme-dist",
        entry_points={GROUP: f"billing = {module}"},
        files={module.replace(".", "/") + ".py": source},
    )
    return entry_point(dist, GROUP, "billing")


def test_an_import_failure_names_the_plugins_file_and_line(plugin_dir: Path) -> None:
    _install(plugin_dir, "acme_mail.settings", "import os\n\nPORT = int(os.environ['NOPE_X'])\n")
    ep = _install(
        plugin_dir, "acme_mail.handlers", "from acme_mail import settings\n\nprint('unreached')\n"
    )
    with pytest.raises(RegistryError) as info:
        load(ep)
    assert info.value.exit_code == ExitCode.PLUGIN
    assert str(info.value) == (
        "plugin 'billing' (distribution acme-dist): cannot load acme_mail.handlers, at "
        "acme_mail/settings.py:3: KeyError: 'NOPE_X'"
    )


def test_a_wrong_handler_signature_names_the_handler_the_form_and_the_line(
    plugin_dir: Path,
) -> None:
    ep = _install(
        plugin_dir,
        "acme_sig.handlers",
        "from eventworker import handler\n\n\n"
        "@handler('mail.send')\n"
        "async def send_mail(payload):\n"
        "    pass\n",
    )
    with pytest.raises(RegistryError) as info:
        load(ep)
    assert str(info.value) == (
        "plugin 'billing' (distribution acme-dist): cannot load acme_sig.handlers, at "
        "acme_sig/handlers.py:4: ValueError: @handler send_mail: takes (payload); expected "
        "(event: Event[Model], ctx: Context)"
    )


def test_a_syntax_error_names_its_file_and_line(plugin_dir: Path) -> None:
    ep = _install(plugin_dir, "acme_syntax", "x = 1\ndef broken(:\n")
    with pytest.raises(RegistryError, match=r", at acme_syntax\.py:2: SyntaxError"):
        load(ep)


def test_a_missing_dependency_is_located_at_the_plugins_import_line(plugin_dir: Path) -> None:
    ep = _install(plugin_dir, "acme_dep.handlers", "\nimport acme_no_such_dependency_q\n")
    with pytest.raises(RegistryError, match=r", at acme_dep/handlers\.py:2: ModuleNotFoundError"):
        load(ep)


def test_run_exits_4_naming_the_handler_its_form_and_line(
    settings: Settings, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(
        site,
        "acme_cli.handlers",
        "from eventworker import handler\n\n"
        "@handler('mail.send')\n"
        "async def send_mail(payload):\n"
        "    pass\n",
    )
    env = env_for(settings, EVENTWORKER_PLUGINS="billing", PYTHONPATH=str(site))
    result = subprocess.run(
        [EVENTWORKER, "run"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == ExitCode.PLUGIN, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: plugin 'billing' (distribution acme-dist): cannot load acme_cli.handlers, at "
        "acme_cli/handlers.py:3: ValueError: @handler send_mail: takes (payload); expected "
        "(event: Event[Model], ctx: Context)"
    )
