"""The handlers of acme-orders, run as a worker runs them, without a broker."""

from acme_orders.handlers import confirm_order

from eventworker.testing import run_handler_sync


def test_an_order_with_a_known_coupon_is_confirmed() -> None:
    outcome = run_handler_sync(
        confirm_order, {"order_id": "o-1", "total": 20, "coupon": "WELCOME10"}
    )
    assert outcome.acked, outcome.error


def test_an_order_without_a_total_is_dead_lettered_at_once() -> None:
    outcome = run_handler_sync(confirm_order, {"order_id": "o-1"})
    assert outcome.dead_letter_reason == "schema_error"
