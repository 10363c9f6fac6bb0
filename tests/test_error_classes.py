"""The error taxonomy end to end, against the real broker: what each outcome of a handler (and
each kind of bad input) does to the message, how often the handler runs, and what the dead-lettered
copy says. The pure decision is unit-tested in test_retry.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from pydantic import BaseModel

from eventworker import Context, Event, Reject, Retry, RetryPolicy, handler
from eventworker.settings import Settings
from tests.support.broker import Broker, running, wait_for

H = "x-eventworker-"


class PermanentError(Exception):
    """What a plugin declares as never worth a retry."""


class Order(BaseModel):
    order_id: str


async def test_every_error_class_is_retried_or_dead_lettered_as_documented(
    broker: Broker, settings: Settings
) -> None:
    runs: Counter[str] = Counter()
    policy = RetryPolicy(max_attempts=3, delays=(1,))

    @handler("tax.general.*", model=Order, retry=policy, give_up_on=(PermanentError,), timeout=0.5)
    async def general(event: Event[Order], ctx: Context) -> None:
        runs[event.id] += 1
        match event.id:
            case "retry-once" if event.attempt == 1:
                raise Retry(delay=1)
            case "always-fails":
                raise RuntimeError("broken for good")
            case "permanent":
                raise PermanentError("no such customer")
            case "rejected":
                raise Reject("negative total")
            case "slow":
                await asyncio.sleep(5)

    @handler("tax.narrow", retry=policy, retry_on=(ConnectionError,))
    async def narrow(event: Event[Any], ctx: Context) -> None:
        runs[event.id] += 1
        if event.id == "transient" and event.attempt == 1:
            raise ConnectionError("downstream away")
        if event.id == "not-listed":
            raise ValueError("not a transient error")

    ok = b'{"order_id": "o-1"}'
    async with running(broker, [general, narrow], settings) as worker:
        general_dead, narrow_dead = (r.dead_letter_queue for r in worker.routes)
        channel = await broker.connection.channel()  # a binding an older version had
        queue = await channel.get_queue(worker.routes[0].queue, ensure=False)
        await queue.bind(settings.exchange, "tax.removed")
        await channel.close()
        publish = broker.publish
        await publish("tax.general.x", ok, message_id="success")
        await publish("tax.general.x", ok, message_id="retry-once")
        await publish("tax.general.x", ok, message_id="always-fails", expiration=60_000)
        await publish("tax.general.x", ok, message_id="permanent")
        await publish("tax.general.x", ok, message_id="rejected")
        await publish("tax.general.x", ok, message_id="slow")
        await publish("tax.general.x", b"{oops", message_id="invalid-json")
        await publish("tax.general.x", ok, message_id="pickle", content_type="application/x-pickle")
        await publish("tax.general.x", b'{"id": 1}', message_id="schema")
        await publish("tax.removed", ok, message_id="stale-binding")
        await publish("tax.narrow", b"{}", message_id="transient")
        await publish("tax.narrow", b"{}", message_id="not-listed")
        dead_lettered = await broker.take_all(general_dead, expect=8, timeout=30)
        dead_lettered += await broker.take_all(narrow_dead, expect=1, timeout=10)
        await wait_for(lambda: runs["retry-once"] == 2 and runs["transient"] == 2)
        await wait_for(lambda: worker.in_flight == 0)
    outcome = {
        m.message_id: (m.headers[H + "reason"], m.headers[H + "attempt"]) for m in dead_lettered
    }
    assert outcome == {
        "always-fails": ("exception", 3),  # any other exception: retried per policy
        "slow": ("timeout", 3),  # a timeout too
        "permanent": ("give_up", 1),  # give_up_on: dead-lettered at once
        "rejected": ("rejected", 1),  # Reject: dead-lettered at once
        "invalid-json": ("decode_error", 1),  # invalid input: dead-lettered at once, never run
        "pickle": ("unsupported_content_type", 1),
        "schema": ("schema_error", 1),
        "stale-binding": ("no_handler", 1),  # no binding key of the handler matches
        "not-listed": ("give_up", 1),  # retry_on: anything else is dead-lettered at once
    }
    assert runs == {
        "success": 1,
        "retry-once": 2,  # Retry: once more after the delay, then success
        "always-fails": 3,
        "slow": 3,
        "permanent": 1,
        "rejected": 1,
        "transient": 2,  # listed in retry_on: retried
        "not-listed": 1,
    }
    by_id = {m.message_id: m for m in dead_lettered}
    assert by_id["always-fails"].expiration is None  # a dead-letter copy never expires
    assert by_id["permanent"].headers[H + "exception"] == "PermanentError"
    assert by_id["permanent"].headers[H + "error"] == "no such customer"
    assert by_id["slow"].headers[H + "exception"] == "HandlerTimeoutError"
