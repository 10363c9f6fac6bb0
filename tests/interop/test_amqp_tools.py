"""rabbitmq-c's command-line clients (Debian's ``amqp-tools``) as a foreign producer and
consumer, against a real worker. ``amqp-publish`` sets no ``message_id``, ``timestamp`` or
``app_id``, and only text headers (``-H "name: value"``); ``amqp-consume`` hands each body to a
command. Its ``-C`` passes any bytes, so it can also send a ``content_type`` that is not UTF-8."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from eventworker import Context, Event, Reject, handler
from eventworker.settings import Settings
from eventworker.worker.lifecycle import State
from tests.support.broker import Broker, running, wait_for
from tests.support.foreign import run, why_no_amqp_tools
from tests.support.queues import sink

pytestmark = pytest.mark.skipif(why_no_amqp_tools() is not None, reason=why_no_amqp_tools() or "")


def _connection(settings: Settings) -> list[str]:
    url = urlsplit(settings.url.get_secret_value())
    return [
        f"--server={url.hostname}",
        f"--port={url.port or 5672}",
        f"--username={url.username}",
        f"--password={url.password}",
    ]


async def _publish(settings: Settings, key: str, body: str, *options: str | bytes) -> None:
    await run(
        "amqp-publish",
        *_connection(settings),
        f"--exchange={settings.exchange}",
        f"--routing-key={key}",
        "--persistent",
        f"--body={body}",
        *options,  # bytes too: a content type that is not UTF-8
    )


async def _consume_bodies(settings: Settings, queue: str, count: int) -> list[Any]:
    """``count`` bodies read by amqp-consume, each handed to ``cat`` and printed one per line."""
    out = await run(
        "amqp-consume",
        *_connection(settings),
        f"--queue={queue}",
        f"--count={count}",
        "--",  # the end of amqp-consume's options: "-c" below belongs to sh
        "sh",
        "-c",
        "cat; echo",
    )
    return [json.loads(line) for line in out.decode().splitlines() if line]


async def test_an_event_from_amqp_publish_reaches_the_handler_with_a_derived_id(
    broker: Broker, settings: Settings
) -> None:
    seen: list[Event[Any]] = []

    @handler("interop.c.#", name="c_props")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    async with running(broker, [record], settings):
        for _ in range(2):  # the same event sent twice, as a producer's retry would
            await _publish(
                settings,
                "interop.c.created",
                '{"order": "o-1"}',
                "--content-type=application/json",
                "--content-encoding=utf-8",
                "--header=tenant: acme",
                "--header=region: eu-west",
            )
        await wait_for(lambda: len(seen) == 2)
    first, second = seen
    assert first.type == "interop.c.created" and first.data == {"order": "o-1"}
    assert dict(first.headers) == {"tenant": "acme", "region": "eu-west"}
    # no message_id: an id derived from the routing key, timestamp and body, the same for both
    # copies, so an inbox treats the second as the duplicate it is
    assert first.id and first.id == second.id
    assert first.source is None and first.correlation_id == first.id


async def test_a_content_type_that_is_not_utf8_is_dead_lettered_and_costs_nothing_else(
    broker: Broker, settings: Settings
) -> None:
    handled: list[str] = []

    @handler("interop.c.#", name="c_bad_type")
    async def record(event: Event[Any], ctx: Context) -> None:
        handled.append(event.data["n"])

    async with running(broker, [record], settings) as worker:
        route = worker.routes[0]
        await _publish(
            settings, "interop.c.bad", '{"n": 1}', b"--content-type=application/json\xe9"
        )
        await _publish(settings, "interop.c.good", '{"n": 2}', "--content-type=application/json")
        await wait_for(lambda: handled == [2])
        await broker.wait_count(route.dead_letter_queue, 1)
        assert worker.reconnects == 0 and worker.state is State.RUNNING
    assert await _consume_bodies(settings, route.dead_letter_queue, 1) == [{"n": 1}]


async def test_follow_up_events_and_dead_letters_are_read_by_amqp_consume(
    broker: Broker, settings: Settings
) -> None:
    @handler("interop.c.order", name="c_follow")
    async def follow(event: Event[Any], ctx: Context) -> None:
        if event.data["order"] == "bad":
            raise Reject("no such order")
        await ctx.publish("interop.c.shipped", {"order": event.data["order"]})

    async with running(broker, [follow], settings) as worker:
        followed = await sink(broker, "interop.c.shipped", "followed")
        await _publish(settings, "interop.c.order", '{"order": "o-9"}')
        await _publish(settings, "interop.c.order", '{"order": "bad"}')
        assert await _consume_bodies(settings, followed, 1) == [{"order": "o-9"}]
        dead = worker.routes[0].dead_letter_queue
        assert await _consume_bodies(settings, dead, 1) == [{"order": "bad"}]
