"""The arithmetic of broker-held delays: digits, levels entered, and the bindings that read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventworker.topology import delays, layout
from eventworker.topology.topic import compile_bindings

LEVELS = 28


def route(delay: int, key: str, levels: int) -> tuple[list[int], str]:
    """Follow a message through the levels' bindings as the broker would: the levels whose
    queue it waits in, and the exchange it reaches last."""
    routing_key = delays.routing_key(delay, key, levels)
    waited: list[int] = []
    level = delays.entry_level(delay)
    while level >= 0:
        wait = compile_bindings([delays.wait_binding(level, levels)]).matches(routing_key)
        skip = compile_bindings([delays.skip_binding(level, levels)]).matches(routing_key)
        assert wait != skip, "exactly one binding of a level matches"
        if wait:
            waited.append(level)
        level -= 1
    return waited, "delivery"


@given(st.integers(min_value=1, max_value=2**LEVELS - 1))
def test_the_levels_entered_sum_to_the_delay(delay: int) -> None:
    waited, _ = route(delay, "order.placed", LEVELS)
    assert sum(2**level for level in waited) == delay
    assert waited == delays.levels_entered(delay, LEVELS)
    assert waited[0] == delays.entry_level(delay)  # no hop above its highest 1 digit
    assert len(waited) <= LEVELS


@given(st.integers(min_value=1, max_value=2**25 - 1), st.sampled_from(["a", "a.b.c", "1.0", "#"]))
def test_a_queue_bound_with_a_key_receives_the_delayed_event(delay: int, key: str) -> None:
    routing_key = delays.routing_key(delay, key, 25)
    bindings = compile_bindings([delays.delayed_binding(key, 25)])
    assert bindings.matches(routing_key) or key == "#"
    assert compile_bindings([delays.delayed_binding("#", 25)]).matches(routing_key)
    assert not compile_bindings([delays.delayed_binding("other", 25)]).matches(routing_key)


@settings(deadline=None)  # compiles bindings per level: slow on a loaded machine
@given(st.integers(min_value=1, max_value=2 ** (LEVELS - 1) - 1))
def test_a_retry_copy_waits_its_delay_and_ends_at_the_return_exchange(delay: int) -> None:
    routing_key = delays.return_key(delay, LEVELS)
    waited: list[int] = []
    for level in range(delays.entry_level(delay), -1, -1):
        if compile_bindings([delays.wait_binding(level, LEVELS)]).matches(routing_key):
            waited.append(level)
        else:
            assert compile_bindings([delays.skip_binding(level, LEVELS)]).matches(routing_key)
    assert sum(2**level for level in waited) == delay
    assert compile_bindings([delays.return_binding()]).matches(routing_key)
    assert not compile_bindings(delays.event_bindings()).matches(routing_key)
    event_key = delays.routing_key(delay, "return.x", LEVELS)
    assert compile_bindings(delays.event_bindings()).matches(event_key)
    assert not compile_bindings([delays.return_binding()]).matches(event_key)


def test_a_retry_delay_never_enters_the_top_level() -> None:
    assert delays.longest_retry(25) == 2**24 - 1
    assert delays.return_key(5, 25) == "return." + "0." * 21 + "1.0.1"
    with pytest.raises(ValueError, match="1 to 16777215 s"):
        delays.return_key(2**24, 25)
    assert delays.is_level_queue("ev", "ev.delay.7")
    assert not delays.is_level_queue("ev", "ev.delay.delivery")
    assert not delays.is_level_queue("ev", "other.delay.7")


def test_five_seconds_is_101_in_binary_and_skips_level_one() -> None:
    assert delays.routing_key(5, "order.placed", 25) == "0." * 22 + "1.0.1.order.placed"
    assert delays.levels_entered(5, 25) == [2, 0]
    assert delays.entry_level(5) == 2


def test_seconds_round_up_and_refuse_what_is_wrong() -> None:
    assert delays.seconds(1) == 1
    assert delays.seconds(0.2) == 1
    assert delays.seconds(timedelta(minutes=1, milliseconds=1)) == 61
    assert delays.seconds() == 0
    assert delays.seconds(at=datetime.now(UTC) - timedelta(days=1)) == 0
    assert 99 <= delays.seconds(at=datetime.now(UTC) + timedelta(seconds=99.5)) <= 100
    with pytest.raises(ValueError, match="negative"):
        delays.seconds(-1)
    with pytest.raises(ValueError, match="not both"):
        delays.seconds(5, datetime.now(UTC))
    with pytest.raises(ValueError, match="time zone"):
        delays.seconds(at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="longer than 25 levels"):
        delays.check(2**25, "a", 25)
    with pytest.raises(ValueError, match="delay_levels"):
        delays.check(5, "a", 0)
    with pytest.raises(ValueError, match="at most 205 bytes"):
        delays.check(5, "a" * 206, 25)
    delays.check(365 * 86400, "a" * 205, 25)  # a year fits in the fewest levels


def test_the_plan_has_the_levels_once_per_exchange() -> None:
    handlers = [
        layout.handler_queues("a", ["order.*"], prefix="p."),
        layout.handler_queues("b", ["order.placed", "x.#"], prefix="p."),
    ]
    plan = layout.plan(
        handlers,
        exchange="ev",
        prefix="p.",
        queue_type="quorum",
        delivery_limit=20,
        tiers=[1.0],
        delay_levels=25,
    )
    levels = [q for q in plan.queues if q.name.startswith("ev.delay.")]
    assert [q.name for q in levels] == [f"ev.delay.{k}" for k in range(25)]
    assert levels[3].arguments["x-message-ttl"] == 8000
    assert levels[3].arguments["x-dead-letter-exchange"] == "ev.delay.2"
    assert levels[0].arguments["x-dead-letter-exchange"] == "ev.delay.delivery"
    assert levels[0].arguments["x-dead-letter-strategy"] == "at-least-once"
    assert levels[0].arguments["x-overflow"] == "reject-publish"
    assert "x-dead-letter-routing-key" not in levels[0].arguments  # the digits go on
    exchanges = [e.name for e in plan.exchanges]
    assert exchanges.count("ev.delay.delivery") == 1
    assert len([e for e in exchanges if e.startswith("ev.delay.")]) == 26
    hops = [b for b in plan.bindings if b.to_exchange]
    assert len(hops) == 28  # 25 skips, the delivery exchange to the event and return exchanges
    for key in ("0.#", "1.#"):
        assert layout.BindingDecl("ev", "ev.delay.delivery", key, to_exchange=True) in hops
    back = layout.BindingDecl("ev.return", "ev.delay.delivery", "return.#", to_exchange=True)
    assert back in hops
    delayed = {(b.queue, b.routing_key) for b in plan.bindings if b.exchange == "ev"}
    assert ("p.b", "*." * 25 + "x.#") in delayed
    assert ("p.a", "*." * 25 + "order.*") in delayed
    off = layout.plan(
        handlers, exchange="ev", prefix="p.", queue_type="quorum", delivery_limit=20, tiers=[]
    )
    assert not [e for e in off.exchanges if ".delay." in e.name]
