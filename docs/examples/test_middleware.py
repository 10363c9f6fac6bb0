"""Testing middleware with eventworker.testing (docs/plugins.md): no broker needed."""

from __future__ import annotations

from middleware import TenantGuard, Timing

from eventworker import Context, Event, handler
from eventworker.testing import run_handler


@handler("orders.created")
async def bill(event: Event[object], ctx: Context) -> None:
    pass


async def test_an_unknown_tenant_is_dead_lettered_before_the_handler_runs() -> None:
    outcome = await run_handler(
        bill, {}, headers={"tenant": "initech"}, middleware=[TenantGuard(), Timing()]
    )
    assert outcome.dead_letter_reason == "rejected_by_middleware"
    assert outcome.copy_headers["x-eventworker-error"] == (
        "rejected by middleware TenantGuard: unknown tenant 'initech'"
    )


async def test_a_known_tenant_is_handled() -> None:
    outcome = await run_handler(bill, {}, headers={"tenant": "acme"}, middleware=[TenantGuard()])
    assert outcome.acked
