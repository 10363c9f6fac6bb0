"""Middleware around handling, against the real broker: the order of the hooks, a rejection
with its diagnosis, failures, hooks that raise, and middleware enabled from entry points by the
``middleware`` setting of ``eventworker run``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eventworker import Context, Event, Middleware, Reject, RetryPolicy, handler
from eventworker.errors import ExitCode, RejectedByMiddleware
from eventworker.plugins.discovery import load_middleware
from eventworker.settings import Settings
from eventworker.testing import run_handler
from eventworker.worker.decisions import Ack, DeadLetter, RetryIn
from tests.support.broker import Broker, running, wait_for
from tests.support.cli import EVENTWORKER, env_for
from tests.support.distributions import install

ONCE = RetryPolicy(max_attempts=1, delays=(1,))


class Recording(Middleware):
    """Records every hook it sees, under its own label."""

    def __init__(self, label: str, log: list[str]) -> None:
        self.label = label
        self.log = log

    async def before(self, event: Event[Any], ctx: Context) -> None:
        self.log.append(f"{self.label}.before {event.id}")

    async def around(
        self, call: Callable[[], Awaitable[None]], event: Event[Any], ctx: Context
    ) -> None:
        self.log.append(f"{self.label}.around>")
        try:
            await call()
        finally:
            self.log.append(f"{self.label}.around<")

    async def after(self, event: Event[Any], ctx: Context) -> None:
        self.log.append(f"{self.label}.after")

    async def on_failure(self, event: Event[Any], ctx: Context, error: BaseException) -> None:
        self.log.append(f"{self.label}.on_failure {type(error).__name__}")

    async def on_outcome(self, event: Event[Any], ctx: Context, outcome: object) -> None:
        self.log.append(f"{self.label}.on_outcome {outcome!r}")


class TenantGuard(Middleware):
    """Refuses events without a tenant header: they can never succeed."""

    async def before(self, event: Event[Any], ctx: Context) -> None:
        if "tenant" not in event.headers:
            raise Reject("no tenant header")


class GateKeeper(Middleware):
    """Refuses from ``around``, without calling the handler."""

    async def around(
        self, call: Callable[[], Awaitable[None]], event: Event[Any], ctx: Context
    ) -> None:
        if event.headers.get("closed"):
            raise Reject("gate closed")
        await call()


async def test_hooks_run_in_order_first_listed_outermost_in_a_worker(
    broker: Broker, settings: Settings
) -> None:
    log: list[str] = []

    @handler("mw.order")
    async def handled(event: Event[Any], ctx: Context) -> None:
        log.append("handler")

    chain = [Recording("A", log), Recording("B", log)]
    async with running(broker, [handled], settings, middleware=chain):
        await broker.publish("mw.order", b"{}", message_id="o1")
        await wait_for(lambda: len(log) == 11)
    assert log == [
        "A.before o1",
        "B.before o1",
        "A.around>",
        "B.around>",
        "handler",
        "B.around<",
        "A.around<",
        "B.after",
        "A.after",
        "B.on_outcome Ack()",
        "A.on_outcome Ack()",
    ]


async def test_a_middleware_rejection_is_dead_lettered_at_once_with_its_diagnosis(
    broker: Broker, settings: Settings
) -> None:
    log: list[str] = []
    ran: list[str] = []

    @handler("mw.guarded", retry=RetryPolicy(max_attempts=5, delays=(1,)))
    async def guarded(event: Event[Any], ctx: Context) -> None:
        ran.append(event.id)
        if event.headers.get("handler-rejects"):
            raise Reject("handler says no")

    chain = [Recording("R", log), TenantGuard(), GateKeeper()]
    async with running(broker, [guarded], settings, middleware=chain) as worker:
        dead = worker.routes[0].dead_letter_queue
        await broker.publish("mw.guarded", b"{}", message_id="no-tenant")
        await broker.publish(
            "mw.guarded", b"{}", message_id="closed", headers={"tenant": "a", "closed": 1}
        )
        await broker.publish(
            "mw.guarded", b"{}", message_id="own", headers={"tenant": "a", "handler-rejects": 1}
        )
        await broker.publish("mw.guarded", b"{}", message_id="fine", headers={"tenant": "a"})
        await broker.wait_count(dead, 3)
        await wait_for(lambda: "R.on_outcome Ack()" in log)
    assert sorted(ran) == ["fine", "own"]
    letters = {m.message_id: m.headers for m in await broker.take_all(dead, expect=3)}
    assert letters["no-tenant"]["x-eventworker-reason"] == "rejected_by_middleware"
    assert letters["no-tenant"]["x-eventworker-error"] == (
        "rejected by middleware TenantGuard: no tenant header"
    )
    assert letters["no-tenant"]["x-eventworker-attempt"] == 1
    assert letters["closed"]["x-eventworker-reason"] == "rejected_by_middleware"
    assert (
        letters["closed"]["x-eventworker-error"] == "rejected by middleware GateKeeper: gate closed"
    )
    # The handler's own Reject passes through the around wrappers as the handler's.
    assert letters["own"]["x-eventworker-reason"] == "rejected"
    assert "R.on_failure RejectedByMiddleware" in log
    assert "R.on_outcome DeadLetter(reason='rejected_by_middleware')" in log


async def test_a_failing_before_fails_the_attempt_and_raising_observers_change_nothing(
    log_lines: list[str],
) -> None:
    class Flaky(Middleware):
        async def before(self, event: Event[Any], ctx: Context) -> None:
            if event.attempt == 1:
                raise ConnectionError("rate limiter unreachable")

    class Noisy(Middleware):
        async def after(self, event: Event[Any], ctx: Context) -> None:
            raise RuntimeError("after broke")

        async def on_outcome(self, event: Event[Any], ctx: Context, outcome: object) -> None:
            raise RuntimeError("outcome broke")

    @handler("mw.flaky", retry=RetryPolicy(max_attempts=3, delays=(2,)))
    async def plain(event: Event[Any], ctx: Context) -> None:
        pass

    first = await run_handler(plain, {}, middleware=[Flaky(), Noisy()])
    second = await run_handler(plain, {}, attempt=2, middleware=[Flaky(), Noisy()])
    assert first.decision == RetryIn(2)
    assert first.copy_headers["x-eventworker-error"] == "rate limiter unreachable"
    assert second.decision == Ack()
    assert any("middleware Noisy after failed: RuntimeError: after broke" in x for x in log_lines)
    assert any("middleware Noisy on_outcome failed" in x for x in log_lines)


async def test_the_handler_timeout_covers_the_middleware_before_it() -> None:
    class Slow(Middleware):
        async def before(self, event: Event[Any], ctx: Context) -> None:
            await asyncio.sleep(5)

    @handler("mw.slow", timeout=0.1, retry=ONCE)
    async def quick(event: Event[Any], ctx: Context) -> None:
        pass

    outcome = await run_handler(quick, {}, middleware=[Slow()])
    assert outcome.dead_letter_reason == "timeout"


async def test_a_rejection_is_reported_by_the_test_kit() -> None:
    @handler("mw.kit")
    async def never(event: Event[Any], ctx: Context) -> None:
        raise AssertionError("must not run")

    outcome = await run_handler(never, {}, middleware=[TenantGuard()])
    assert outcome.decision == DeadLetter("rejected_by_middleware")
    assert outcome.copy_headers["x-eventworker-exception"] == "RejectedByMiddleware"
    assert RejectedByMiddleware("TenantGuard", "no tenant header").middleware == "TenantGuard"


def _middleware_dist(root: Path, source: str, entry_points: str) -> Path:
    site = root / "mwsite"
    install(
        site,
        distribution="acme-mw",
        entry_points={"eventworker.middleware": entry_points},
        files={"acme_mw.py": source},
    )
    return site


MIDDLEWARE_SOURCE = (
    "from eventworker import Middleware, Reject\n\n"
    "class Guard(Middleware):\n"
    "    async def before(self, event, ctx):\n"
    "        if 'tenant' not in event.headers:\n"
    "            raise Reject('no tenant header')\n\n"
    "class Tag(Middleware):\n"
    "    async def after(self, event, ctx):\n"
    "        ctx.logger.info('tagged {}', event.id)\n\n"
    "instance = Tag()\n"
    "not_one = 42\n"
)


def test_load_middleware_in_the_order_named_classes_and_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _middleware_dist(
        tmp_path,
        MIDDLEWARE_SOURCE,
        "guard = acme_mw:Guard\ntag = acme_mw:instance\nbad = acme_mw:not_one\n",
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(__import__("sys").modules, "acme_mw", raising=False)
    assert [m.name for m in load_middleware(["tag", "guard"])] == ["Tag", "Guard"]
    assert load_middleware([]) == []
    with pytest.raises(Exception, match="no installed middleware named nope") as info:
        load_middleware(["guard", "nope"])
    assert getattr(info.value, "exit_code", None) == ExitCode.PLUGIN
    with pytest.raises(Exception, match="acme_mw:not_one is a int, not a Middleware"):
        load_middleware(["bad"])
    with pytest.raises(Exception, match="guard named twice"):
        load_middleware(["guard", "guard"])


async def test_run_enables_middleware_from_entry_points_by_the_middleware_setting(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    [queue] = broker.track_installed("greet")
    site = _middleware_dist(
        tmp_path, MIDDLEWARE_SOURCE, "guard = acme_mw:Guard\ntag = acme_mw:Tag\n"
    )
    env = env_for(settings, PYTHONPATH=str(site), EVENTWORKER_MIDDLEWARE="guard,tag")
    log = tmp_path / "worker.log"
    with log.open("w") as stream:
        process = await asyncio.create_subprocess_exec(
            EVENTWORKER,
            "run",
            "--handler",
            "greet",
            stdout=stream,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            await wait_for(lambda: "handler greet from" in log.read_text(), 30)
            await broker.publish("demo.greet", b'{"name": "Ada"}', message_id="untenanted")
            await broker.publish(
                "demo.greet", b'{"name": "Bo"}', message_id="tenanted", headers={"tenant": "t"}
            )
            await broker.wait_count(f"{queue}.dead", 1)
            await wait_for(lambda: "tagged tenanted" in log.read_text(), 30)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert "middleware, outermost first: Guard, Tag" in text
    assert (
        "greet dead-lettered untenanted after attempt 1 (rejected_by_middleware): "
        "RejectedByMiddleware: rejected by middleware Guard: no tenant header" in text
    )
    unknown = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "run",
        "--handler",
        "greet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(settings, PYTHONPATH=str(site), EVENTWORKER_MIDDLEWARE="guard,nope"),
    )
    _, stderr = await asyncio.wait_for(unknown.communicate(), 60)
    assert unknown.returncode == ExitCode.PLUGIN
    assert stderr.decode().splitlines()[-1] == (
        "error: no installed middleware named nope in entry-point group 'eventworker.middleware'"
    )
