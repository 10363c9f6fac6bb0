"""Events no binding matches, with the ``unrouted_queue`` setting on: they land in that queue
through the exchange's alternate exchange, `publish` says so, and `dlq` lists and replays them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventworker import Context, Event, handler
from eventworker.errors import ExitCode, TopologyConflictError
from eventworker.settings import Settings
from eventworker.topology.layout import ExchangeDecl, QueueDecl, handler_queues, plan
from tests.support.broker import Broker, running, wait_for
from tests.support.cli import cli

BILL = handler_queues("bill", ["orders.created"], prefix="ew.")


def test_the_plan_gives_the_exchange_an_alternate_exchange_feeding_the_queue() -> None:
    p = plan(
        [BILL],
        exchange="events",
        prefix="ew.",
        queue_type="quorum",
        delivery_limit=20,
        tiers=(1.0,),
        unrouted_queue="ew.unrouted",
    )
    assert p.exchanges[0] == ExchangeDecl(
        "events", "topic", {"alternate-exchange": "events.unrouted"}
    )
    assert ExchangeDecl("events.unrouted", "fanout") in p.exchanges
    assert QueueDecl("ew.unrouted", {"x-queue-type": "quorum"}) in p.queues
    assert next(b for b in p.bindings if b.queue == "ew.unrouted").exchange == "events.unrouted"


def test_without_the_setting_the_exchange_has_no_alternate_exchange() -> None:
    p = plan(
        [BILL], exchange="events", prefix="ew.", queue_type="quorum", delivery_limit=20, tiers=()
    )
    assert p.exchanges[0].arguments == {}
    assert [e.name for e in p.exchanges] == ["events", "events.return"]


@pytest.fixture
def unrouted(settings: Settings) -> Settings:
    return settings.model_copy(update={"unrouted_queue": f"{settings.queue_prefix}unrouted"})


@handler("orders.created", name="orders")
async def orders(event: Event[Any], ctx: Context) -> None:
    pass


async def test_unroutable_events_land_in_the_unrouted_queue_and_publish_says_so(
    broker: Broker, unrouted: Settings, tmp_path: Path
) -> None:
    queue = unrouted.unrouted_queue
    env = {"EVENTWORKER_UNROUTED_QUEUE": queue}
    async with running(broker, [orders], unrouted):
        events = tmp_path / "events.jsonl"
        events.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(50)))
        result = cli(unrouted, "publish", "nobody.listens.here", "--file", str(events), **env)
        assert result.returncode == 0, result.stderr
        assert "50 confirmed" in result.stdout
        assert f"50 of them matched no binding and went to the unrouted queue {queue!r}" in (
            result.stderr
        )
        routed = cli(unrouted, "publish", "orders.created", "{}", **env)
        assert routed.returncode == 0 and "unrouted" not in routed.stderr
        assert await broker.count(queue) == 50

        listed = cli(unrouted, "dlq", "ls", "--json", **env)
        assert listed.returncode == 0, listed.stderr
        [row] = [r for r in json.loads(listed.stdout) if r["queue"] == queue]
        assert row["messages"] == 50
        assert row["top_reasons"] == [{"reason": "unrouted", "count": 50}]
        shown = cli(unrouted, "dlq", "show", queue, "--limit", "2", **env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count("nobody.listens.here  unrouted") == 2
        assert await broker.count(queue) == 50


async def test_replayed_unrouted_events_reach_a_handler_bound_since(
    broker: Broker, unrouted: Settings
) -> None:
    seen: list[int] = []

    @handler("nobody.#", name="latecomer")
    async def latecomer(event: Event[Any], ctx: Context) -> None:
        seen.append(event.data["n"])

    env = {"EVENTWORKER_UNROUTED_QUEUE": unrouted.unrouted_queue}
    async with running(broker, [orders], unrouted):
        for n in range(3):
            published = cli(unrouted, "publish", "nobody.listens", json.dumps({"n": n}), **env)
            assert published.returncode == 0 and "went to the unrouted queue" in published.stderr
    async with running(broker, [orders, latecomer], unrouted):
        result = cli(unrouted, "dlq", "replay", unrouted.unrouted_queue, **env)
        assert result.returncode == 0, result.stderr
        assert "3 of 3 message(s)" in result.stdout
        await wait_for(lambda: len(seen) == 3)
    assert seen == [0, 1, 2]
    assert await broker.count(unrouted.unrouted_queue) == 0


async def test_a_worker_without_the_setting_refuses_an_exchange_that_has_one(
    broker: Broker, settings: Settings, unrouted: Settings
) -> None:
    async with running(broker, [orders], unrouted):
        pass
    with pytest.raises(TopologyConflictError) as caught:
        async with running(broker, [orders], settings):
            pass
    assert caught.value.argument == "alternate-exchange"
    assert caught.value.queue == settings.exchange


async def test_publish_says_so_when_the_exchange_has_no_alternate_exchange_yet(
    broker: Broker, settings: Settings, unrouted: Settings
) -> None:
    async with running(broker, [orders], settings):  # a worker without the setting
        pass
    env = {"EVENTWORKER_UNROUTED_QUEUE": unrouted.unrouted_queue}
    result = cli(unrouted, "publish", "nobody.listens", "{}", **env)
    assert result.returncode == ExitCode.FAILED  # unroutable, as without the setting
    assert "has no alternate exchange yet" in result.stderr
    assert "unroutable" in result.stderr
