"""Example handlers: one succeeds, one fails twice then succeeds, one always fails, one is
slow, one validates its payload with a model and publishes a follow-up event, one sends mail
through a resource the worker opens once."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from eventworker import Context, Event, Reject, RetryPolicy, handler
from eventworker_example.mail import Mailer

# The plugin's resources are those of the module its entry point names: importing one declares it.
from eventworker_example.mail import mailer as mailer


class OrderCreated(BaseModel):
    order_id: str
    total: float


@handler("demo.greet")
async def greet(event: Event[dict[str, str]], ctx: Context) -> None:
    """Succeeds: acked on the first attempt."""
    ctx.logger.info("hello, {}", event.data.get("name", "world"))


@handler("demo.flaky", retry=RetryPolicy(max_attempts=4, delays=(1, 2)))
async def flaky(event: Event[object], ctx: Context) -> None:
    """Fails on attempts 1 and 2, succeeds on attempt 3: retried by the broker after 1 s and 2 s."""
    if event.attempt < 3:
        raise ConnectionError(f"downstream unavailable (attempt {event.attempt})")
    ctx.logger.info("succeeded on attempt {}", event.attempt)


@handler("demo.broken", retry=RetryPolicy(max_attempts=3, delays=(1,)))
def broken(event: Event[object], ctx: Context) -> None:
    """Always fails (a sync handler, run in a thread): 3 attempts, then the dead-letter queue."""
    raise RuntimeError("this handler always fails")


@handler("demo.slow", timeout=120)
async def slow(event: Event[dict[str, float]], ctx: Context) -> None:
    """Sleeps ``seconds`` (default 1): shows a graceful drain waiting for running handlers."""
    seconds = float(event.data.get("seconds", 1))
    ctx.logger.info("working for {}s", seconds)
    await asyncio.sleep(seconds)
    ctx.logger.info("done after {}s", seconds)


@handler(
    "orders.created",
    "orders.*.created",
    model=OrderCreated,
    retry=RetryPolicy(max_attempts=4, delays=(1, 10, 60)),
    concurrency=8,
    timeout=30,
)
async def bill_order(event: Event[OrderCreated], ctx: Context) -> None:
    """Validates the payload (a bad one is dead-lettered at once); publishes billing.charged."""
    if event.data.total < 0:
        raise Reject("negative total")
    await ctx.publish(
        "billing.charged", {"order_id": event.data.order_id, "amount": event.data.total}
    )


@handler("billing.charged")
async def record_charge(event: Event[dict[str, object]], ctx: Context) -> None:
    """Receives the follow-up event; its causation id is the order event's id."""
    ctx.logger.info(
        "charged order {} (caused by {})", event.data.get("order_id"), event.causation_id
    )


class UserSignedUp(BaseModel):
    email: str
    name: str


@handler("users.signed_up")
async def send_welcome(event: Event[UserSignedUp], ctx: Context) -> None:
    """Sends a welcome mail with the worker's one mail client (the ``mailer`` resource). Its
    model, UserSignedUp, is inferred from the annotation: a bad payload is dead-lettered."""
    await ctx.resource(Mailer).send(event.data.email, f"Welcome, {event.data.name}")
    ctx.logger.info("welcome mail sent to {}", event.data.email)
