"""``eventworker topology plan|apply`` against the real broker: what is missing, extra or in
conflict, what apply fixes, and that plan names a changed argument before ``run`` stops on it."""

from __future__ import annotations

import json
import shutil
from typing import Any

import aio_pika
import pytest

from eventworker import Context, Event, handler
from eventworker.errors import ExitCode
from eventworker.settings import Settings, load_settings
from eventworker.topology import bindings, declare, drift
from eventworker.topology.bindings import LiveBinding, Reading
from eventworker.worker.lifecycle import Worker
from tests.support.broker import Broker, registrations
from tests.support.cli import cli
from tests.support.private_node import private_node

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to read bindings"
)


@handler("drift.created", name="drifter")
async def drifter(event: Event[Any], ctx: Context) -> None:
    pass


# pure


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@h:5672/", "/"),
        ("amqp://u:p@h:5672", "/"),
        ("amqp://u:p@h/prod", "prod"),
        ("amqp://u:p@h/%2Fteam", "/team"),
    ],
)
def test_the_virtual_host_is_the_path_of_the_url(url: str, vhost: str) -> None:
    assert bindings.vhost(url) == vhost


async def test_a_remote_broker_without_management_url_leaves_bindings_unchecked(
    settings: Settings,
) -> None:
    remote = settings.model_copy(update={"url": type(settings.url)("amqp://u:p@10.9.8.7:5672/")})
    reading = await bindings.read(remote)
    assert reading.bindings is None
    assert "management_url" in reading.source


def test_the_advice_for_a_conflict_names_the_setting_and_a_migration() -> None:
    text = drift.advice("queue", "ew.bill", "x-delivery-limit", dead_letter=False)
    assert "set delivery_limit back" in text
    assert "rabbitmqctl delete_queue ew.bill" in text
    assert "policy" in text
    dead = drift.advice("queue", "ew.bill.dead", "x-queue-type", dead_letter=True)
    assert "set queue_type back" in dead and "eventworker dlq export" in dead
    exchange = drift.advice("exchange", "events", "alternate-exchange", dead_letter=False)
    assert "set unrouted_queue back" in exchange and "delete exchange 'events'" in exchange


def test_a_management_url_must_be_http(settings: Settings) -> None:
    from eventworker.errors import ConfigError

    with pytest.raises(ConfigError, match="management_url"):
        load_settings(url=settings.url.get_secret_value(), management_url="amqp://x")


# against the broker


async def test_a_fresh_broker_misses_everything_and_a_declared_one_matches(
    broker: Broker, settings: Settings
) -> None:
    worker = Worker(registrations(drifter), settings)
    broker.track(worker)
    unread = Reading(None, "not compared: test")
    before = await drift.compare(broker.connection, worker.plan, unread, prefix="t.")
    assert {f.status for f in before if f.kind != "binding"} == {"missing"}
    assert {f.status for f in before if f.kind == "binding"} == {"unchecked"}
    done = await drift.reconcile(broker.connection, worker.plan, before)
    assert f"declared queue {worker.routes[0].queue}" in done
    after = await drift.compare(broker.connection, worker.plan, unread, prefix="t.")
    assert {f.status for f in after if f.kind != "binding"} == {"ok"}


async def test_a_changed_argument_is_a_conflict_and_nothing_is_created_by_looking(
    broker: Broker, settings: Settings
) -> None:
    worker = await broker.declare(drifter)
    changed = Worker(registrations(drifter), settings.model_copy(update={"delivery_limit": 5}))
    findings = await drift.compare(
        broker.connection, changed.plan, Reading(None, "-"), prefix=settings.queue_prefix
    )
    [conflict] = [f for f in findings if f.status == "conflict"]
    assert conflict.name == worker.routes[0].queue
    assert conflict.detail.startswith("x-delivery-limit: ")
    assert "'5'" in conflict.detail and "'20'" in conflict.detail
    assert "set delivery_limit back" in conflict.advice


async def test_plan_reports_a_changed_queue_argument_before_run_would_fail_on_it(
    broker: Broker, settings: Settings
) -> None:
    [queue] = broker.track_installed("greet")
    applied = cli(settings, "topology", "apply", "--handler", "greet")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"declared queue {queue}" in applied.stdout
    in_sync = cli(settings, "topology", "plan", "--handler", "greet")
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr
    assert "conflict" not in in_sync.stdout and "missing" not in in_sync.stdout

    changed = {"EVENTWORKER_DELIVERY_LIMIT": "5"}
    planned = cli(settings, "topology", "plan", "--handler", "greet", **changed)
    assert planned.returncode == ExitCode.DRIFT, planned.stdout + planned.stderr
    assert f"conflict  queue     {queue}\n" in planned.stdout
    assert "x-delivery-limit: received '5' but current is '20'" in planned.stdout
    assert "how: set delivery_limit back" in planned.stdout
    rows = json.loads(cli(settings, "topology", "plan", "--handler", "greet", "--json",
                          **changed).stdout)  # fmt: skip
    assert [r["name"] for r in rows if r["status"] == "conflict"] == [queue]

    run = cli(settings, "run", "--handler", "greet", **changed)
    assert run.returncode == ExitCode.BROKER_REFUSED
    assert queue in run.stderr and "x-delivery-limit" in run.stderr


@needs_rabbitmqctl
async def test_apply_removes_stale_bindings_and_leaves_foreign_ones(
    broker: Broker, settings: Settings
) -> None:
    [queue] = broker.track_installed("greet")
    assert cli(settings, "topology", "apply", "--handler", "greet").returncode == 0
    channel = await broker.connection.channel()
    work = await channel.get_queue(queue, ensure=False)
    await work.bind(settings.exchange, "demo.old")  # left from an earlier version
    foreign = await channel.declare_queue(f"{settings.queue_prefix}elsewhere", durable=True)
    broker._queues.add(foreign.name)
    await foreign.bind(settings.exchange, "demo.#")  # a handler installed on another host
    await channel.close()

    planned = cli(settings, "topology", "plan", "--handler", "greet")
    assert planned.returncode == ExitCode.DRIFT
    assert "bindings read from: rabbitmqctl" in planned.stdout
    assert f"extra     binding   {settings.exchange} -> {queue} 'demo.old'" in planned.stdout
    assert "stale: apply removes it" in planned.stdout
    assert f"-> {foreign.name} 'demo.#'" in planned.stdout
    assert "no handler installed here" in planned.stdout

    applied = cli(settings, "topology", "apply", "--handler", "greet")
    assert f"removed stale binding {settings.exchange} -> {queue} 'demo.old'" in applied.stdout
    assert applied.returncode == ExitCode.DRIFT  # the foreign binding is left, and said so
    assert f"-> {foreign.name} 'demo.#'" in applied.stdout

    live = bindings.from_rabbitmqctl("/", timeout=60)
    assert LiveBinding.of(settings.exchange, queue, "demo.old", {}) not in live
    assert LiveBinding.of(settings.exchange, foreign.name, "demo.#", {}) in live
    assert LiveBinding.of(settings.exchange, queue, "demo.greet", {}) in live


async def test_bindings_are_read_from_the_management_api() -> None:
    with private_node() as node:
        settings = load_settings(
            url=node.url,
            exchange="mgmt.x",
            queue_prefix="mgmt.",
            management_url=f"http://127.0.0.1:{node.management_port}",
        )
        worker = Worker(registrations(drifter), settings)
        connection = await aio_pika.connect(node.url)
        channel = await connection.channel()

        await declare.apply(worker.plan, channel)
        queue = await channel.get_queue(worker.routes[0].queue, ensure=False)
        await queue.bind("mgmt.x", "drift.removed")
        reading = await bindings.read(settings)
        assert reading.source == "management API"
        findings = await drift.compare(connection, worker.plan, reading, prefix="mgmt.")
        await connection.close()
    extra = [f for f in findings if f.status == "extra"]
    assert [f.name for f in extra] == [f"mgmt.x -> {worker.routes[0].queue} 'drift.removed'"]
    assert {f.status for f in findings} == {"ok", "extra"}
    return_binding = [f for f in findings if "mgmt.x.return" in f.name]
    assert return_binding and return_binding[0].status == "ok"  # header arguments compared


@needs_rabbitmqctl
async def test_plan_shows_the_delay_levels_and_apply_declares_them_once(
    broker: Broker, settings: Settings
) -> None:
    levels = {"EVENTWORKER_DELAY_LEVELS": "25"}
    delayed = settings.model_copy(update={"delay_levels": 25})
    broker.track(Worker(discover_greet(), delayed))
    x = settings.exchange
    planned = cli(settings, "topology", "plan", "--handler", "greet", **levels)
    assert planned.returncode == ExitCode.DRIFT, planned.stdout + planned.stderr
    for level in (0, 24):
        assert f"missing   queue     {x}.delay.{level}\n" in planned.stdout
        assert f"missing   exchange  {x}.delay.{level}\n" in planned.stdout
    assert f"missing   exchange  {x}.delay.delivery\n" in planned.stdout
    assert f"{x}.delay.1 -> exchange {x}.delay.0 '{'*.' * 23}0.#'" in planned.stdout
    assert f"{x}.delay.delivery -> exchange {x} '0.#'" in planned.stdout
    assert f"{x}.delay.delivery -> exchange {x}.return 'return.#'" in planned.stdout
    assert planned.stdout.count(f"missing   queue     {x}.delay.") == 25

    applied = cli(settings, "topology", "apply", "--handler", "greet", **levels)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"bound {x}.delay.0 -> exchange {x}.delay.delivery" in applied.stdout
    in_sync = cli(settings, "topology", "plan", "--handler", "greet", **levels)
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr

    channel = await broker.connection.channel()
    level_zero = await channel.get_exchange(f"{x}.delay.0", ensure=False)
    await level_zero.unbind(f"{x}.delay.1", "*." * 23 + "0.#")
    await channel.close()
    drifted = cli(settings, "topology", "plan", "--handler", "greet", **levels)
    assert drifted.returncode == ExitCode.DRIFT
    assert f"missing   binding   {x}.delay.1 -> exchange {x}.delay.0" in drifted.stdout
    assert cli(settings, "topology", "apply", "--handler", "greet", **levels).returncode == 0
    live = bindings.from_rabbitmqctl("/", timeout=60)
    skip = LiveBinding.of(f"{x}.delay.1", f"{x}.delay.0", "*." * 23 + "0.#", {}, to_exchange=True)
    assert skip in live

    # The delivery exchange's binding of every message to the event exchange, as declared
    # before exact retry delays, would pass retry copies on to it: stale, removed.
    channel = await broker.connection.channel()
    events = await channel.get_exchange(x, ensure=False)
    await events.bind(f"{x}.delay.delivery", "#")
    await channel.close()
    stale = cli(settings, "topology", "plan", "--handler", "greet", **levels)
    assert f"{x}.delay.delivery -> exchange {x} '#'" in stale.stdout
    assert "stale: apply removes it" in stale.stdout
    removed = cli(settings, "topology", "apply", "--handler", "greet", **levels)
    assert f"removed stale binding {x}.delay.delivery -> exchange {x} '#'" in removed.stdout


def discover_greet() -> list[Any]:
    from eventworker.plugins.discovery import discover

    return discover(names=["greet"])


@needs_rabbitmqctl
async def test_every_declaration_removes_the_delivery_binding_of_earlier_releases(
    broker: Broker, settings: Settings
) -> None:
    """The delivery exchange once passed every message on with "#"; it would hand retry copies
    to the event exchange as well. A worker (any declaration) removes it with no manual step."""
    from eventworker.topology import layout

    x = settings.exchange
    plan = layout.plan(
        [],
        exchange=x,
        prefix=settings.queue_prefix,
        queue_type="quorum",
        delivery_limit=20,
        tiers=[1.0],
        delay_levels=25,
    )
    broker.track_plan(plan)
    await declare.apply(plan, broker.connection)
    channel = await broker.connection.channel()
    events = await channel.get_exchange(x, ensure=False)
    await events.bind(f"{x}.delay.delivery", "#")
    await channel.close()
    old = LiveBinding.of(f"{x}.delay.delivery", x, "#", {}, to_exchange=True)
    assert old in bindings.from_rabbitmqctl("/", timeout=60)

    await declare.apply(plan, broker.connection)
    live = bindings.from_rabbitmqctl("/", timeout=60)
    assert old not in live
    assert LiveBinding.of(f"{x}.delay.delivery", x, "0.#", {}, to_exchange=True) in live
    await declare.apply(plan, await broker.connection.channel())  # again, with it gone: fine
