"""The plugin API without a broker: @handler, binding-key checks, RetryPolicy, Context."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from loguru import logger
from pydantic import BaseModel

from eventworker import Context, Event, Handler, RetryPolicy, handler
from eventworker.handlers import check_binding_key
from tests.support.publishing import RecordingPublish


def _event(**changes: Any) -> Event[Any]:
    fields: dict[str, Any] = {
        "id": "evt-1",
        "type": "orders.created",
        "source": "shop",
        "time": datetime(2024, 5, 1, tzinfo=UTC),
        "data": {"order_id": "o-1"},
        "headers": {},
        "attempt": 1,
        "correlation_id": "corr-1",
    }
    return Event(**(fields | changes))


# @handler


def test_the_decorator_returns_a_handler_that_is_still_callable() -> None:
    @handler("orders.created")
    def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    seen: list[str] = []
    assert isinstance(record, Handler)
    record(_event(), Context("record", _event(), RecordingPublish()))
    assert seen == ["evt-1"]


async def test_an_async_handler_is_awaitable_through_the_handler_object() -> None:
    @handler("orders.created")
    async def record(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)

    seen: list[str] = []
    assert record.is_async
    result = record(_event(), Context("record", _event(), RecordingPublish()))
    assert result is not None
    await result
    assert seen == ["evt-1"]


def test_a_sync_handler_is_not_marked_async() -> None:
    @handler("a")
    def sync(event: Event[Any], ctx: Context) -> None: ...

    assert sync.is_async is False


def test_the_name_defaults_to_the_function_name() -> None:
    @handler("orders.created")
    async def bill_order(event: Event[Any], ctx: Context) -> None: ...

    assert bill_order.name == "bill_order"


def test_the_handler_keeps_every_option_it_was_given() -> None:
    class Order(BaseModel):
        order_id: str

    policy = RetryPolicy(max_attempts=2, delays=(5,))

    @handler(
        "orders.created",
        "orders.*.created",
        name="billing",
        queue="billing-q",
        model=Order,
        retry=policy,
        concurrency=8,
        timeout=30,
        retry_on=(OSError,),
        give_up_on=(KeyError,),
    )
    async def bill(event: Event[Any], ctx: Context) -> None: ...

    assert (bill.name, bill.bindings, bill.queue, bill.model, bill.retry) == (
        "billing",
        ("orders.created", "orders.*.created"),
        "billing-q",
        Order,
        policy,
    )
    assert (bill.concurrency, bill.timeout, bill.retry_on, bill.give_up_on) == (
        8,
        30,
        (OSError,),
        (KeyError,),
    )
    assert bill.module == __name__


def test_a_handler_without_binding_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one binding key"):
        handler()


@pytest.mark.parametrize("key", ["orders.*created", "orders.created#", "a..b", ".a", "a.", "*.#x"])
def test_a_bad_binding_key_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ValueError) as info:
        handler("ok.key", key)
    assert repr(key) in str(info.value)


def test_an_empty_binding_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty binding key"):
        handler("")


def test_a_binding_key_over_255_bytes_is_refused_naming_its_start() -> None:
    key = "orders." + "x" * 249
    assert len(key.encode()) == 256
    with pytest.raises(ValueError, match="longer than 255 bytes") as info:
        handler(key)
    assert key[:40] in str(info.value)


def test_a_binding_key_of_255_multibyte_bytes_is_measured_in_bytes() -> None:
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        check_binding_key("é" * 128)


@pytest.mark.parametrize(
    "key", ["*", "#", "orders.#", "a.*.c", "#.created", "*.*", "x" * 255, "orders.created"]
)
def test_a_valid_binding_key_is_accepted(key: str) -> None:
    @handler(key)
    async def h(event: Event[Any], ctx: Context) -> None: ...

    assert h.bindings == (key,)


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_must_be_at_least_one(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        handler("a", concurrency=concurrency)


@pytest.mark.parametrize("timeout", [0, -0.5])
def test_the_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        handler("a", timeout=timeout)


def test_a_model_that_is_not_a_pydantic_model_is_refused() -> None:
    with pytest.raises(ValueError, match="BaseModel"):
        handler("a", model=dict)  # type: ignore[arg-type]  # the point: it must refuse


def test_decorating_something_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ValueError, match="decorates a function"):
        handler("a")("not a function")  # type: ignore[arg-type]  # the point: it must refuse


# RetryPolicy


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 1.0), (2, 10.0), (3, 60.0), (4, 60.0), (50, 60.0)]
)
def test_the_delay_after_attempt_k_is_delays_k_minus_one_then_the_last(
    attempt: int, delay: float
) -> None:
    assert RetryPolicy(max_attempts=5, delays=(1, 10, 60)).delay_after(attempt) == delay


def test_a_single_delay_applies_after_every_attempt() -> None:
    policy = RetryPolicy(max_attempts=9, delays=(7,))
    assert [policy.delay_after(k) for k in (1, 2, 8)] == [7.0, 7.0, 7.0]


def test_delays_are_stored_as_a_tuple_of_floats() -> None:
    policy = RetryPolicy(delays=[1, 2])  # type: ignore[arg-type]  # a list from user code
    assert policy.delays == (1.0, 2.0)
    assert all(isinstance(d, float) for d in policy.delays)


def test_the_default_policy_is_five_attempts_with_growing_delays() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=5, delays=(1.0, 10.0, 60.0, 300.0))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -2}, "max_attempts"),
        ({"delays": ()}, "delays"),
        ({"delays": (1, 0)}, "delays"),
        ({"delays": (-1,)}, "delays"),
    ],
)
def test_an_invalid_policy_is_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_a_policy_with_a_non_finite_delay_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(delays=(1, delay))


# Context


async def test_context_publish_carries_the_correlation_id_and_the_event_id_as_causation() -> None:
    publish = RecordingPublish()
    ctx = Context("bill_order", _event(id="evt-7", correlation_id="corr-7"), publish)
    await ctx.publish("billing.charged", {"amount": 3}, id="follow-1", headers={"k": "v"})
    assert publish.calls == [
        {
            "routing_key": "billing.charged",
            "data": {"amount": 3},
            "id": "follow-1",
            "headers": {"k": "v"},
            "correlation_id": "corr-7",
            "causation_id": "evt-7",
        }
    ]


async def test_context_publish_leaves_the_follow_up_id_to_the_publisher_by_default() -> None:
    publish = RecordingPublish()
    await Context("h", _event(), publish).publish("a.b", [1])
    assert (publish.calls[0]["id"], publish.calls[0]["headers"]) == (None, None)


def test_publish_blocking_outside_a_running_worker_is_refused() -> None:
    ctx = Context("h", _event(), RecordingPublish())
    with pytest.raises(RuntimeError, match="running worker"):
        ctx.publish_blocking("a.b", {})


def test_the_context_logger_is_bound_to_the_handler_and_the_event() -> None:
    ctx = Context(
        "bill_order", _event(id="evt-3", attempt=2, correlation_id="c-3"), RecordingPublish()
    )
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record["extra"]), level="DEBUG")
    try:
        ctx.logger.info("hello")
    finally:
        logger.remove(sink)
    assert records == [
        {
            "handler": "bill_order",
            "event_id": "evt-3",
            "event_type": "orders.created",
            "attempt": 2,
            "correlation_id": "c-3",
        }
    ]
