"""The test handler plugin: handlers that record every call in the ledger and obey fault
hooks carried in the event's own data, so each test decides per message what goes wrong.

Fault hooks (keys of the JSON body; all optional):

    sleep: float          await (or, in a sync handler, time.sleep) that many seconds
    fail_attempts: int    raise RetryableError while the attempt is <= this (1000: always)
    permanent: true       raise PermanentError (declared in give_up_on: dead-lettered at once)
    retry_in: float       raise Retry(delay=...) on attempt 1
    fault: str            "hang" (await forever, or ``block`` seconds),
                          "block" (time.sleep(block) on the handler's thread),
                          "kill" (SIGKILL this worker before the effect),
                          "kill_after_effect" (SIGKILL after the effect, before the ack),
                          "raise" (raise ValueError(error))
    fault_calls: int      apply ``fault`` only on the first N calls of this id (all processes)
    block: float          seconds for "block"
    error: str            the message for "raise"

The side effect is :meth:`Ledger.apply_effect`: guarded by an idempotency check, the way the
catalogue asks handlers to be (independently of eventworker's own inbox).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from eventworker import Context, Event, Handler, Retry, RetryPolicy, handler
from tests.faults.ledger import Ledger


class RetryableError(Exception):
    """What a flaky dependency raises: retried per policy."""


class PermanentError(Exception):
    """Declared in ``give_up_on``: the input can never succeed."""


class Payload(BaseModel):
    """The model of handlers with ``model=True``: ``n`` is required; other fields are kept,
    since the fault hooks ride in them."""

    model_config = ConfigDict(extra="allow")

    n: int


@dataclass(frozen=True, slots=True)
class Spec:
    """One test handler, as a worker process is told to build it (JSON in the spec file)."""

    name: str
    bindings: tuple[str, ...]
    max_attempts: int = 3
    delays: tuple[float, ...] = (0.5,)
    timeout: float | None = None
    concurrency: int | None = None
    sync: bool = False
    model: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spec:
        return cls(**{**raw, "bindings": tuple(raw["bindings"]), "delays": tuple(raw["delays"])})


@dataclass(slots=True)
class _Faults:
    ledger: Ledger
    sleep_scale: float
    pid: int = field(default_factory=os.getpid)

    def start(self, event: Event[Any]) -> tuple[int, int, dict[str, Any]]:
        data = event.data.model_dump() if isinstance(event.data, BaseModel) else event.data
        plan = data if isinstance(data, dict) else {}
        row, before = self.ledger.start_invocation(
            event.id,
            pid=self.pid,
            redelivered=event.redelivered,
            attempt=event.attempt,
            data=json.dumps(data)[:500],
        )
        return row, before, plan

    def injected(self, plan: dict[str, Any], before: int) -> str | None:
        fault = plan.get("fault")
        calls = plan.get("fault_calls")
        if fault is None or (calls is not None and before >= int(calls)):
            return None
        return str(fault)

    def fail(self, plan: dict[str, Any], attempt: int) -> None:
        """Raise what the plan says this attempt raises."""
        if plan.get("permanent"):
            raise PermanentError("this input can never succeed")
        if attempt <= int(plan.get("fail_attempts", 0)):
            raise RetryableError(f"flaky dependency (attempt {attempt})")
        if plan.get("retry_in") and attempt == 1:
            raise Retry(delay=float(plan["retry_in"]))

    def effect(self, event: Event[Any], fault: str | None) -> str:
        applied = self.ledger.apply_effect(event.id)
        if fault == "kill_after_effect":
            os.kill(os.getpid(), signal.SIGKILL)
        return "ok" if applied else "duplicate"


def build(spec: Spec, ledger: Ledger, *, sleep_scale: float = 1.0) -> Handler:
    """A handler for ``spec`` that records its calls in ``ledger``."""
    faults = _Faults(ledger, sleep_scale)
    options: dict[str, Any] = {
        "name": spec.name,
        "retry": RetryPolicy(max_attempts=spec.max_attempts, delays=spec.delays),
        "timeout": spec.timeout,
        "concurrency": spec.concurrency,
        "model": Payload if spec.model else None,
        "give_up_on": (PermanentError,),
    }

    async def run_async(event: Event[Any], ctx: Context) -> None:
        row, before, plan = faults.start(event)
        try:
            fault = faults.injected(plan, before)
            if fault == "hang":
                if "block" in plan:
                    await asyncio.sleep(float(plan["block"]))
                else:
                    await asyncio.Event().wait()
            if fault == "block":
                # The fault itself: a handler that blocks the event loop.
                time.sleep(float(plan.get("block", 60)))  # noqa: ASYNC251
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "raise":
                raise ValueError(str(plan.get("error", "")))
            await asyncio.sleep(float(plan.get("sleep", 0)) * sleep_scale)
            faults.fail(plan, event.attempt)
            outcome = faults.effect(event, fault)
        except asyncio.CancelledError:
            ledger.finish_invocation(row, "cancelled")
            raise
        except Exception as exc:
            ledger.finish_invocation(row, f"error:{type(exc).__name__}")
            raise
        ledger.finish_invocation(row, outcome)

    def run_sync(event: Event[Any], ctx: Context) -> None:
        row, before, plan = faults.start(event)
        try:
            fault = faults.injected(plan, before)
            if fault in ("hang", "block"):
                time.sleep(float(plan.get("block", 3600)))
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "raise":
                raise ValueError(str(plan.get("error", "")))
            time.sleep(float(plan.get("sleep", 0)) * sleep_scale)
            faults.fail(plan, event.attempt)
            outcome = faults.effect(event, fault)
        except Exception as exc:
            ledger.finish_invocation(row, f"error:{type(exc).__name__}")
            raise
        ledger.finish_invocation(row, outcome)

    func = run_sync if spec.sync else run_async
    func.__name__ = spec.name
    return handler(*spec.bindings, **options)(func)
