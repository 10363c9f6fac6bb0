"""A message whose AMQP header the client library cannot decode, put on the wire for real by a
raw client, costs only itself: dead-lettered at its first delivery in its handler's dead-letter
queue as the broker holds it, while the connection, the deliveries in flight and the other handler
go on untouched (no reconnect). On quorum and classic queues alike."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eventworker import Context, Event, handler
from eventworker.settings import Settings
from eventworker.worker.lifecycle import State
from eventworker.worker.metrics import Metrics
from tests.support.broker import Broker, running, wait_for
from tests.support.raw_amqp import (
    BrokerClosed,
    RawClient,
    entry,
    longstr,
    nested,
    properties,
    shortstr,
    split,
    table,
)

JSON = shortstr(b"application/json")


@dataclass(frozen=True)
class Hostile:
    """A message no pamqp-based client can decode: its property fields as raw bytes, its
    header entries, and the text the decode error names."""

    fields: dict[str, bytes]
    entries: tuple[bytes, ...] = ()
    routing_key: bytes = b"a.hostile"
    names: str = ""
    extra: dict[str, bytes] = field(default_factory=lambda: {"message_id": shortstr(b"bad-1")})

    def block(self) -> bytes:
        headers = {"headers": table(*self.entries)} if self.entries else {}
        return properties(**{**self.extra, **self.fields, **headers})


CASES = {
    "timestamp in microseconds": Hostile(
        {"content_type": JSON, "timestamp": struct.pack(">Q", 1733000000000000)},
        names="timestamp 1733000000000000 is out of range",
    ),
    "content type not UTF-8": Hostile(
        {"content_type": shortstr(b"application/json\xe9")}, names="content_type"
    ),
    "header name not UTF-8": Hostile(
        {"content_type": JSON},
        (entry(b"caf\xe9", b"S", longstr(b"x")), entry(b"kept", b"S", longstr(b"y"))),
        names="header name 'caf\\\\xe9' is not UTF-8",
    ),
    "header table 500 deep": Hostile(
        {"content_type": JSON}, (entry(b"deep", b"F", nested(500)),), names="nested deeper"
    ),
    "header timestamp out of range": Hostile(
        {}, (entry(b"when", b"T", struct.pack(">Q", 2**63)),), names="headers['when']"
    ),
    "message id not UTF-8": Hostile(
        {"message_id": shortstr(b"id\xe9")}, names="message_id 'id\\\\xe9' is not UTF-8"
    ),
    "routing key not UTF-8": Hostile(
        {"content_type": JSON}, routing_key=b"a.\xe9", names="routing key 'a.\\\\xe9'"
    ),
}


@pytest.fixture
async def raw(settings: Settings) -> AsyncIterator[RawClient]:
    client = await RawClient.open(settings.url.get_secret_value())
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
@pytest.mark.parametrize("case", list(CASES))
async def test_an_undecodable_message_is_dead_lettered_at_once_and_nothing_else_is_touched(
    broker: Broker,
    settings: Settings,
    raw: RawClient,
    log_lines: list[str],
    case: str,
    queue_type: str,
) -> None:
    hostile = CASES[case]
    release, handled_b = asyncio.Event(), asyncio.Event()
    ran_a: list[str] = []

    @handler("a.#", name="alpha")
    async def alpha(event: Event[Any], ctx: Context) -> None:
        ran_a.append(event.id)
        await release.wait()  # in flight while the hostile one arrives

    @handler("b.#", name="beta")
    async def beta(event: Event[Any], ctx: Context) -> None:
        handled_b.set()

    metrics = Metrics()
    s = settings.model_copy(update={"queue_type": queue_type})
    async with running(broker, [alpha, beta], s, observers=[metrics]) as worker:
        metrics.watch(worker)
        [route_a, _] = worker.routes
        await broker.publish("a.slow", b"{}", message_id="slow-1")
        await wait_for(lambda: ran_a == ["slow-1"])
        block, body = hostile.block(), b'{"hostile": true}'
        await raw.publish(s.exchange, hostile.routing_key, body, block)
        await broker.publish("b.after", b"{}", message_id="good-1")
        await asyncio.wait_for(handled_b.wait(), 10)
        await broker.wait_count(route_a.dead_letter_queue, 1, timeout=10)
        release.set()
        await wait_for(lambda: worker.in_flight == 0)
        assert worker.reconnects == 0 and worker.state is State.RUNNING
        assert ran_a == ["slow-1"]  # the handler never saw it; the one in flight ran once
        assert _dead_lettered(metrics.registry, "alpha", "undecodable") == 1
    assert await broker.count(route_a.queue) == 0  # slow-1 acked on the same channel
    dead_lettered = await raw.get(route_a.dead_letter_queue)
    assert dead_lettered is not None
    assert dead_lettered.body == body
    _assert_kept(block, hostile.entries, dead_lettered.properties)
    [warning] = [line for line in log_lines if "cannot be decoded" in line]
    assert "WARNING" in warning and "alpha" in warning and hostile.names in warning
    assert not [line for line in log_lines if "reconnect" in line.lower()]


def _dead_lettered(registry: CollectorRegistry, handler: str, reason: str) -> float | None:
    return registry.get_sample_value(
        "eventworker_messages_dead_lettered_total", {"handler": handler, "reason": reason}
    )


def _assert_kept(sent: bytes, entries: tuple[bytes, ...], dead_lettered: bytes) -> None:
    """Every field as sent, byte for byte; the broker's dead-lettering adds its ``x-death``
    entries to the table and sorts it, so each entry sent must be found whole in it."""
    before, after = split(sent), split(dead_lettered)
    for name, raw in before.items():
        if name != "headers":
            assert after[name] == raw, name
    for sent_entry in entries:
        assert sent_entry in after["headers"]


async def test_the_broker_refuses_an_unknown_field_type_itself(
    settings: Settings, raw: RawClient
) -> None:
    block = properties(headers=table(entry(b"k", b"Z", b"\x00\x00")))
    with pytest.raises(BrokerClosed, match="541"):
        await raw.publish("", "amq.unknown-type-probe", b"{}", block)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_a_worker_started_with_an_undecodable_message_waiting_dead_letters_it_and_runs(
    broker: Broker, settings: Settings, raw: RawClient, queue_type: str
) -> None:
    handled: list[str] = []

    @handler("a.#", name="alpha")
    async def alpha(event: Event[Any], ctx: Context) -> None:
        handled.append(event.id)

    s = settings.model_copy(update={"queue_type": queue_type})
    route = (await broker.declare(alpha, settings=s)).routes[0]
    hostile = CASES["header table 500 deep"]
    await raw.publish(s.exchange, hostile.routing_key, b"{}", hostile.block())
    await broker.publish("a.good", b"{}", message_id="good-1")
    async with running(broker, [alpha], s) as worker:
        await wait_for(lambda: handled == ["good-1"])
        await broker.wait_count(route.dead_letter_queue, 1)
        assert worker.reconnects == 0 and worker.state is State.RUNNING
