"""Topology as data, without a broker: names, queue arguments and bindings of the plan."""

from __future__ import annotations

from typing import Any

import pytest

from eventworker.envelope import RETURN_TO
from eventworker.errors import BrokerError
from eventworker.topology.layout import (
    BindingDecl,
    ExchangeDecl,
    HandlerQueues,
    Plan,
    dead_letter_queue,
    handler_queues,
    is_retry_queue,
    plan,
    retry_queue,
    return_exchange,
    work_queue,
)

PREFIX = "ew."
EXCHANGE = "events"


def _plan(
    *handlers: HandlerQueues,
    queue_type: str = "quorum",
    delivery_limit: int = 20,
    tiers: tuple[float, ...] = (1.0, 10.0),
    initial_group_size: int = 0,
) -> Plan:
    return plan(
        handlers,
        exchange=EXCHANGE,
        prefix=PREFIX,
        queue_type=queue_type,
        delivery_limit=delivery_limit,
        tiers=tiers,
        initial_group_size=initial_group_size,
    )


def _args(p: Plan, queue: str) -> dict[str, Any]:
    [decl] = [q for q in p.queues if q.name == queue]
    return decl.arguments


BILL = handler_queues("bill", ["orders.created", "orders.*.created"], prefix=PREFIX)
AUDIT = handler_queues("audit", ["orders.#"], prefix=PREFIX)


# names


def test_the_work_queue_is_the_prefix_and_the_handler_name() -> None:
    assert work_queue(PREFIX, "bill") == "ew.bill"


def test_an_explicit_queue_name_replaces_the_derived_one() -> None:
    assert work_queue(PREFIX, "bill", "billing") == "billing"


def test_the_dead_letter_queue_is_the_work_queue_with_dead_appended() -> None:
    assert dead_letter_queue("ew.bill") == "ew.bill.dead"


@pytest.mark.parametrize(
    ("delay", "name"),
    [
        (1, "ew.retry.1s"),
        (1.0, "ew.retry.1s"),
        (30, "ew.retry.30s"),
        (1.5, "ew.retry.1500ms"),
        (0.25, "ew.retry.250ms"),
        (3600, "ew.retry.3600s"),
    ],
)
def test_a_retry_queue_is_named_after_its_delay(delay: float, name: str) -> None:
    assert retry_queue(PREFIX, delay) == name


def test_the_return_exchange_is_the_exchange_with_return_appended() -> None:
    assert return_exchange("events") == "events.return"


def test_handler_queues_collects_the_names_of_one_handler() -> None:
    assert handler_queues("bill", ("a.b",), prefix=PREFIX, queue="billing") == HandlerQueues(
        handler="bill", queue="billing", dead_letter_queue="billing.dead", bindings=("a.b",)
    )


# exchanges and queues


def test_the_plan_declares_the_topic_exchange_and_the_headers_return_exchange() -> None:
    assert _plan(BILL).exchanges == (
        ExchangeDecl("events", "topic"),
        ExchangeDecl("events.return", "headers"),
    )


def test_the_plan_declares_work_dead_letter_and_retry_queues() -> None:
    names = [q.name for q in _plan(BILL, AUDIT).queues]
    assert sorted(names) == sorted(
        ["ew.bill", "ew.bill.dead", "ew.audit", "ew.audit.dead", "ew.retry.1s", "ew.retry.10s"]
    )


def test_a_quorum_work_queue_has_a_delivery_limit_and_dead_letters_to_its_dead_queue() -> None:
    assert _args(_plan(BILL), "ew.bill") == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "ew.bill.dead",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def test_a_delivery_limit_of_zero_leaves_the_quorum_queue_without_a_limit() -> None:
    assert "x-delivery-limit" not in _args(_plan(BILL, delivery_limit=0), "ew.bill")


def test_a_classic_work_queue_has_no_delivery_limit() -> None:
    args = _args(_plan(BILL, queue_type="classic"), "ew.bill")
    assert args["x-queue-type"] == "classic"
    assert "x-delivery-limit" not in args
    assert args["x-dead-letter-routing-key"] == "ew.bill.dead"


def test_a_classic_work_queue_has_a_probation_queue_dead_lettering_like_it() -> None:
    plan = _plan(BILL, queue_type="classic")
    assert _args(plan, "ew.bill.probation") == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "ew.bill.dead",
    }
    assert "ew.bill.probation" not in {q.name for q in _plan(BILL).queues}  # quorum: none


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_the_dead_letter_queue_has_no_ttl_and_no_length_limit(queue_type: str) -> None:
    assert _args(_plan(BILL, queue_type=queue_type), "ew.bill.dead") == {"x-queue-type": queue_type}


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_retry_queue_is_quorum_with_its_ttl_returning_to_the_return_exchange(
    queue_type: str,
) -> None:
    assert _args(_plan(BILL, queue_type=queue_type, tiers=(1.5,)), "ew.retry.1500ms") == {
        "x-queue-type": "quorum",
        "x-message-ttl": 1500,
        "x-dead-letter-exchange": "events.return",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def test_one_retry_queue_is_declared_per_distinct_tier_in_order() -> None:
    p = _plan(BILL, tiers=(60.0, 1.0, 10.0, 1.0))
    assert list(p.retry_queues.items()) == [
        (1.0, "ew.retry.1s"),
        (10.0, "ew.retry.10s"),
        (60.0, "ew.retry.60s"),
    ]
    assert [_args(p, name)["x-message-ttl"] for name in p.retry_queues.values()] == [
        1000,
        10000,
        60000,
    ]


def test_retry_queues_are_shared_by_all_handlers() -> None:
    p = _plan(BILL, AUDIT, tiers=(5.0,))
    assert [q.name for q in p.queues].count("ew.retry.5s") == 1


def test_a_plan_without_tiers_declares_no_retry_queue() -> None:
    p = _plan(BILL, tiers=())
    assert p.retry_queues == {}
    assert [q.name for q in p.queues] == ["ew.bill", "ew.bill.dead"]


# bindings


def test_each_binding_key_binds_the_work_queue_to_the_topic_exchange() -> None:
    topic = [b for b in _plan(BILL, AUDIT).bindings if b.exchange == "events"]
    assert topic == [
        BindingDecl("ew.bill", "events", "orders.created"),
        BindingDecl("ew.bill", "events", "orders.*.created"),
        BindingDecl("ew.audit", "events", "orders.#"),
    ]


def test_each_work_queue_is_bound_to_the_return_exchange_by_its_own_name_only() -> None:
    back = [b for b in _plan(BILL, AUDIT).bindings if b.exchange == "events.return"]
    assert back == [
        BindingDecl("ew.bill", "events.return", "", {"x-match": "all", RETURN_TO: "ew.bill"}),
        BindingDecl("ew.audit", "events.return", "", {"x-match": "all", RETURN_TO: "ew.audit"}),
    ]


def test_the_return_header_has_no_x_prefix_so_a_headers_exchange_matches_it() -> None:
    assert not RETURN_TO.lower().startswith("x-")


def test_nothing_is_bound_to_the_topic_exchange_but_work_queues() -> None:
    p = _plan(BILL, AUDIT)
    assert {b.queue for b in p.bindings} == {"ew.bill", "ew.audit"}


# conflicts


def test_two_handlers_sharing_a_queue_are_refused_naming_the_queue() -> None:
    one = handler_queues("bill", ["a"], prefix=PREFIX, queue="shared")
    two = handler_queues("audit", ["b"], prefix=PREFIX, queue="shared")
    with pytest.raises(BrokerError, match="shared"):
        _plan(one, two)


def test_a_handler_queue_colliding_with_a_retry_queue_is_refused() -> None:
    clash = handler_queues("retry.1s", ["a"], prefix=PREFIX)
    with pytest.raises(BrokerError, match=r"ew\.retry\.1s"):
        _plan(clash, tiers=(1.0,))


def test_quorum_queues_get_the_initial_group_size_when_set() -> None:
    plan = _plan(BILL, initial_group_size=3)
    for name in ("ew.bill", "ew.bill.dead", "ew.retry.1s"):
        assert _args(plan, name)["x-quorum-initial-group-size"] == 3
    assert "x-quorum-initial-group-size" not in _args(_plan(BILL), "ew.bill")


def test_a_single_active_consumer_handler_gets_that_queue_argument() -> None:
    ordered = handler_queues("ordered", ["o.#"], prefix=PREFIX, single_active_consumer=True)
    assert _args(_plan(ordered), "ew.ordered")["x-single-active-consumer"] is True
    assert "x-single-active-consumer" not in _args(_plan(BILL), "ew.bill")


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        (retry_queue(PREFIX, 30), True),
        (retry_queue(PREFIX, 1.5), True),
        (retry_queue(PREFIX, 7200), True),
        (retry_queue("other.", 30), False),
        ("ew.retry.30s.dead", False),
        ("ew.retry.", False),
        ("ew.retry.xs", False),
        ("ew.billing", False),
        ("", False),
    ],
)
def test_a_retry_queue_is_known_by_its_name_whatever_its_delay(queue: str, expected: bool) -> None:
    assert is_retry_queue(PREFIX, queue) is expected


def test_with_schedules_the_plan_has_the_election_queue_single_active_and_quorum() -> None:
    without = _plan(BILL)
    assert "ew.schedules.leader" not in [q.name for q in without.queues]
    with_schedules = plan(
        [BILL],
        exchange=EXCHANGE,
        prefix=PREFIX,
        queue_type="classic",
        delivery_limit=20,
        tiers=(1.0,),
        initial_group_size=3,
        schedules=True,
    )
    assert _args(with_schedules, "ew.schedules.leader") == {
        "x-queue-type": "quorum",
        "x-quorum-initial-group-size": 3,
        "x-single-active-consumer": True,
    }
