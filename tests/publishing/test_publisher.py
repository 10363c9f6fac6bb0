"""The library publisher against the real broker: per-event results, refusals before sending,
and nothing lost when the broker closes its connection mid-batch."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import pytest

from eventworker import BlockingPublisher, NewEvent, Publisher
from eventworker.errors import BrokerError, BrokerUnreachableError, InvalidInputError, PublishError
from eventworker.publishing.channel import ConfirmChannel, Outgoing, PublishResult
from eventworker.publishing.publisher import Stop, prepare
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.queues import drain, sink


def options(settings: Settings) -> dict[str, object]:
    return {"exchange": settings.exchange, "timeout": 5.0, "connect_timeout": 5.0}


def close_connections(fragment: str) -> int:
    """Force-close, with rabbitmqctl, every broker connection whose name contains ``fragment``."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        if fragment in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: forced close"],
                capture_output=True,
                timeout=60,
                check=True,
            )
            closed += 1
    return closed


async def test_a_batch_reports_confirmed_nacked_and_unroutable_per_event(
    broker: Broker, settings: Settings
) -> None:
    ok = await sink(broker, "orders.created")
    full = await sink(
        broker, "orders.full", "full", **{"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    async with Publisher.connect(settings.url, **options(settings)) as pub:
        await pub.publish("orders.full", {"fill": 1})  # the queue is now full
        results = await pub.publish_many(
            [
                NewEvent("orders.created", {"n": 1}, id="e-ok"),
                NewEvent("nobody.listens", {"n": 2}, id="e-unroutable"),
                NewEvent("orders.full", {"n": 3}, id="e-nacked"),
            ]
        )
    assert [(r.event_id, r.status) for r in results] == [
        ("e-ok", "confirmed"),
        ("e-unroutable", "unroutable"),
        ("e-nacked", "nacked"),
    ]
    assert [r.ok for r in results] == [True, False, False]
    assert [m.message_id for m in await broker.take_all(ok, expect=1)] == ["e-ok"]
    assert await broker.count(full) == 1


async def test_publish_raises_with_the_status_when_not_confirmed(
    broker: Broker, settings: Settings
) -> None:
    await sink(broker, "orders.created")
    async with Publisher.connect(settings.url, **options(settings)) as pub:
        with pytest.raises(PublishError) as raised:
            await pub.publish("nobody.listens", {}, id="lonely")
    assert raised.value.status == "unroutable" and raised.value.event_id == "lonely"


async def test_an_event_carries_its_id_type_headers_and_correlation(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "orders.#")
    async with Publisher.connect(settings.url, source="shop", **options(settings)) as pub:
        result = await pub.publish(
            "orders.created",
            {"order_id": "o-1"},
            id="o-1-created",
            headers={"tenant": "acme", "tags": ["a", 1]},
            correlation_id="checkout-9",
        )
    assert result.ok and result.event_id == "o-1-created"
    [message] = await broker.take_all(queue, expect=1)
    assert message.body == b'{"order_id":"o-1"}'
    assert message.message_id == "o-1-created" and message.type == "orders.created"
    assert message.app_id == "shop" and message.correlation_id == "checkout-9"
    assert message.content_type == "application/json"
    assert message.headers["tenant"] == "acme"


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (NewEvent("orders.*", {}), "wildcard"),
        (NewEvent("", {}), "empty"),
        (NewEvent("k" * 256, {}), "255 bytes"),
        (NewEvent("orders.created", {}, headers={"CC": "audit"}), "reserved"),
        (NewEvent("orders.created", {}, headers={"x-eventworker-attempt": 9}), "reserved"),
        (NewEvent("orders.created", {}, headers={"h": object()}), "AMQP header value"),
        (NewEvent("orders.created", {}, id="i" * 300), "the event id"),
        (NewEvent("orders.created", {}, id="o-\udcff"), "the event id is not valid UTF-8"),
        (NewEvent("orders.created", {}, headers={"h": ["\udce9"]}), "the value is not valid UTF-8"),
        (NewEvent("orders.created", {1, 2}), "JSON"),
        (NewEvent("orders.created", "x" * 2000), "max_body_bytes"),
    ],
)
async def test_a_bad_event_is_refused_before_anything_is_sent(
    broker: Broker, settings: Settings, event: NewEvent, problem: str
) -> None:
    queue = await sink(broker, "#")
    async with Publisher.connect(settings.url, max_body_bytes=1000, **options(settings)) as pub:
        with pytest.raises(InvalidInputError, match=problem) as raised:
            await pub.publish_many([NewEvent("orders.ok", {"fine": True}), event])
    assert "event 1" in str(raised.value)
    assert await broker.count(queue) == 0


async def test_connecting_fails_clearly_without_a_broker_or_an_exchange(
    settings: Settings,
) -> None:
    with pytest.raises(BrokerUnreachableError, match=r"guest:\*\*\*@127.0.0.1:1"):
        async with Publisher.connect("amqp://guest:s3cret@127.0.0.1:1/", exchange="x"):
            pass
    with pytest.raises(BrokerError, match="does not exist"):
        async with Publisher.connect(settings.url, exchange=f"{settings.exchange}.missing"):
            pass


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_nothing_is_lost_across_a_forced_connection_close(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "load.#")
    sent: list[str] = []
    closer_done = asyncio.Event()

    async def closer() -> None:
        # Close our publisher's connection once it is up; the batches keep coming meanwhile.
        mine = f"eventworker publisher {os.uname().nodename}:{os.getpid()}"
        for _ in range(600):  # bounded: the connection shows up within a second or two
            if await asyncio.to_thread(close_connections, mine):
                closer_done.set()
                return
            await asyncio.sleep(0.05)

    async with Publisher.connect(settings.url, **options(settings)) as pub:
        task = asyncio.create_task(closer())
        batch = 0
        # Keep batches in flight until a close has hit one mid-way (events were sent again),
        # bounded in count so a broken publisher fails instead of looping.
        while pub.republished == 0 and batch < 400:
            events = [NewEvent("load.x", {"n": n}, id=f"b{batch}-{n}") for n in range(500)]
            results = await pub.publish_many(events)
            assert [r.status for r in results] == ["confirmed"] * len(events)
            sent.extend(r.event_id for r in results)
            batch += 1
        await asyncio.wait_for(closer_done.wait(), 30)
        await task
        assert pub.reconnects >= 1 and pub.republished >= 1
    delivered = [m.message_id for m in await drain(broker, queue, expect=len(sent))]
    assert set(delivered) == set(sent)  # nothing confirmed is lost
    assert set(delivered) <= set(sent)  # and a duplicate is only ever of a sent id


async def test_nothing_is_lost_when_the_broker_closes_the_channel_over_one_event(
    broker: Broker, settings: Settings
) -> None:
    """A CC header that is not an array makes the broker close the channel (406), failing
    every confirm in flight with it, another task's too: only that event is reported."""
    queue = await sink(broker, "chan.#")
    events = [Outgoing("chan.x", b'{"n": %d}' % n, f"c-{n}") for n in range(300)]
    # Past prepare(), which refuses CC, as a producer of raw wire-form events could send it.
    poison = Outgoing("chan.x", b"{}", "poison", headers={"CC": "not-an-array"})
    events[150] = poison
    others = [Outgoing("chan.y", b"{}", f"o-{n}") for n in range(300)]
    async with Publisher.connect(settings.url, **options(settings)) as pub:
        mixed, clean = await asyncio.gather(pub.send_many(events), pub.send_many(others))
        assert pub.republished >= 1
        republished = pub.republished
        [single] = await pub.send_many([poison])
        assert pub.republished == republished, "alone in flight, it is known at once"
    failed = [r for r in [*mixed, *clean] if not r.ok]
    assert [(r.event_id, r.status) for r in failed] == [("poison", "nacked")]
    assert "PRECONDITION_FAILED" in failed[0].detail
    assert (single.status, single.detail) == ("nacked", failed[0].detail)
    sent = {e.id for e in [*events, *others]} - {"poison"}
    delivered = [m.message_id for m in await drain(broker, queue, expect=len(sent))]
    assert set(delivered) == sent  # duplicates allowed, each with its own id


async def test_a_stop_part_way_gives_every_event_one_result_and_sends_no_more(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "stop.#")
    events = [Outgoing("stop.x", b'{"n": %d}' % n, f"s-{n}") for n in range(20_000)]
    heard: list[PublishResult] = []
    stop = Stop(wait=5.0)

    def on_result(result: PublishResult) -> None:
        heard.append(result)
        if len(heard) == 500:
            stop.request()

    async with Publisher.connect(settings.url, **options(settings)) as pub:
        results = await pub.send_many(events, on_result=on_result, stop=stop, window=64)
    assert sorted(r.event_id for r in heard) == sorted(e.id for e in events)  # each once
    by_status: dict[str, set[str]] = {}
    for r in results:
        by_status.setdefault(r.status, set()).add(r.event_id)
    assert set(by_status) <= {"confirmed", "interrupted", "not_sent"}, set(by_status)
    assert len(by_status["confirmed"]) >= 500 and len(by_status["not_sent"]) > 10_000
    # what reached the queue: every confirmed event, and nothing never sent
    delivered = {
        m.message_id for m in await drain(broker, queue, expect=len(by_status["confirmed"]))
    }
    assert by_status["confirmed"] <= delivered
    assert not delivered & by_status["not_sent"]


async def test_the_blocking_publisher_publishes_from_threads(
    broker: Broker, settings: Settings
) -> None:
    queue = await sink(broker, "sync.#")

    def from_sync_code() -> list[str]:
        with BlockingPublisher.connect(settings.url, **options(settings)) as pub:
            first = pub.publish("sync.one", {"n": 1}, id="s-1")
            rest = pub.publish_many([NewEvent("sync.two", {"n": 2}, id="s-2")])
            with pytest.raises(PublishError):
                pub.publish("nobody.listens", {})
        with pytest.raises(BrokerError, match="closed"):
            pub.publish("sync.one", {})
        return [first.event_id, *(r.event_id for r in rest if r.ok)]

    assert await asyncio.to_thread(from_sync_code) == ["s-1", "s-2"]
    assert sorted(m.message_id or "" for m in await broker.take_all(queue, expect=2)) == [
        "s-1",
        "s-2",
    ]


async def test_a_window_of_batched_writes_confirms_and_delivers_each_event_once_in_order(
    broker: Broker, settings: Settings
) -> None:
    # Many windows' worth of events written a batch at a time, an unroutable one among them
    # every 97: each has its own result, and the queue holds the others once each, in order.
    queue = await sink(broker, "orders.created")
    events = [
        NewEvent("nobody.listens" if n % 97 == 0 else "orders.created", {"n": n}, id=f"e-{n}")
        for n in range(3000)
    ]
    heard: list[str] = []
    async with Publisher.connect(settings.url, **options(settings)) as pub:
        prepared = [prepare(e, max_body_bytes=pub.max_body_bytes) for e in events]
        results = await pub.send_many(
            prepared, window=64, on_result=lambda r: heard.append(r.event_id)
        )
    expected = [
        (e.id, "unroutable" if e.routing_key == "nobody.listens" else "confirmed") for e in events
    ]
    assert [(r.event_id, r.status) for r in results] == expected
    assert sorted(heard) == sorted(e.id for e in prepared)  # each result heard once
    delivered = [m.message_id for m in await drain(broker, queue, expect=2969)]
    assert delivered == [e.id for e in events if e.routing_key == "orders.created"]


async def test_large_events_go_out_in_several_writes_each_confirmed_in_order(
    broker: Broker, settings: Settings
) -> None:
    # 600 KB bodies: a window's worth would be megabytes, so the batch is cut into writes of
    # about WRITE_BYTES; every event still confirmed and delivered once, in order.
    queue = await sink(broker, "orders.created")
    events = [NewEvent("orders.created", {"n": n, "pad": "x" * 600_000}) for n in range(6)]
    async with Publisher.connect(settings.url, **options(settings)) as pub:
        results = await pub.publish_many(events)
    assert [r.status for r in results] == ["confirmed"] * 6
    delivered = await drain(broker, queue, expect=6)
    assert [m.message_id for m in delivered] == [r.event_id for r in results]
    assert [json.loads(m.body)["n"] for m in delivered] == list(range(6))


async def test_a_batch_that_gets_no_turn_on_the_channel_in_time_is_reported_timeout(
    broker: Broker, settings: Settings
) -> None:
    # Another publish holds the channel (as one stuck on a broker that blocks publishers
    # would): the batch waits no longer than the timeout, sends nothing and says so per event.
    queue = await sink(broker, "orders.created")
    events = [Outgoing("orders.created", b"{}", f"e-{n}") for n in range(3)]
    async with ConfirmChannel.connect(
        settings.url, exchange=settings.exchange, timeout=0.5
    ) as channel:
        async with channel._underlay.lock:
            results = await asyncio.wait_for(channel.send_many(events), 10)
        assert [(r.event_id, r.status) for r in results] == [
            ("e-0", "timeout"),
            ("e-1", "timeout"),
            ("e-2", "timeout"),
        ]
        assert (await channel.send(Outgoing("orders.created", b"{}", "e-after"))).ok
    assert [m.message_id for m in await drain(broker, queue, expect=1)] == ["e-after"]
