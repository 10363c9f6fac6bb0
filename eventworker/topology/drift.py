"""Topology drift: what the installed handlers need (a :class:`layout.Plan`) against what the
broker has, and making the broker match where RabbitMQ allows it.

Over AMQP alone: a passive declare tells whether an exchange or a queue exists; for one that
does, an active declare with the planned type and arguments, on a channel of its own, either
changes nothing (it exists like that) or fails with PRECONDITION_FAILED naming one argument that
differs (RabbitMQ names one at a time). Existence comes first, because an active declare would
create what is missing. Bindings cannot be listed over AMQP: they come from ``bindings.read``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPChannelError, ChannelNotFoundEntity, ChannelPreconditionFailed

from eventworker.amqp.connection import CHANNEL_GONE
from eventworker.errors import BrokerError
from eventworker.topology.bindings import LiveBinding, Reading
from eventworker.topology.declare import conflict_error
from eventworker.topology.layout import BindingDecl, ExchangeDecl, Plan, QueueDecl

Kind = Literal["exchange", "queue", "binding"]
Status = Literal["ok", "missing", "conflict", "extra", "unchecked"]

#: What RabbitMQ says after naming the argument: "received '5' but current is '20'".
_REPORTED = re.compile(r"in vhost '[^']*': (?P<what>.*)$")
#: For an argument that differs, the setting behind it.
SETTING_OF = {
    "x-queue-type": "queue_type",
    "x-delivery-limit": "delivery_limit",
    "alternate-exchange": "unrouted_queue",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One object of the plan (or one extra binding) and how the broker has it."""

    kind: Kind
    name: str
    status: Status
    detail: str = ""
    advice: str = ""
    binding: LiveBinding | None = None


def _binding(b: BindingDecl) -> LiveBinding:
    return LiveBinding.of(
        b.exchange, b.queue, b.routing_key, b.arguments, to_exchange=b.to_exchange
    )


def describe_binding(binding: LiveBinding) -> str:
    arguments = ", ".join(f"{k}={v}" for k, v in binding.arguments)
    destination = f"exchange {binding.queue}" if binding.to_exchange else binding.queue
    return f"{binding.exchange} -> {destination} {binding.routing_key!r}" + (
        f" [{arguments}]" if arguments else ""
    )


def advice(kind: Kind, name: str, argument: str, *, dead_letter: bool) -> str:
    """How to resolve a conflict: RabbitMQ never changes an existing queue's or exchange's
    arguments, so either the setting goes back or the object is declared anew."""
    setting = SETTING_OF.get(argument)
    back = f"set {setting} back to the broker's value" if setting else "use the old settings"
    if kind == "exchange":
        return (
            f"{back}, or delete exchange {name!r} and start the workers, which declare it and "
            f"their bindings anew (events published to it meanwhile are unroutable)"
        )
    drain = (
        "`eventworker dlq export` its messages, delete it"
        if dead_letter
        else "stop the workers that consume it, let it drain or move its messages, delete it"
    )
    text = f"{back}; or migrate: {drain} (`rabbitmqctl delete_queue {name}`), start the workers"
    if argument == "x-delivery-limit":
        text += (
            "; a policy with `delivery-limit` lowers the effective limit of a quorum queue "
            "without that"
        )
    return text


async def _probe(
    connection: AbstractConnection, declare: Callable[[AbstractChannel], Awaitable[None]]
) -> str:
    """The conflict an active declare of an existing object reports ("" for none), on a
    channel of its own (a failed declare closes its channel)."""
    channel = await connection.channel()
    try:
        await declare(channel)
        return ""
    except ChannelPreconditionFailed as exc:
        conflict = conflict_error(exc)
        if conflict is None:
            raise BrokerError(f"broker refused a declare: {exc}") from exc
        reported = _REPORTED.search(str(exc))
        return f"{conflict.argument}: {reported['what'] if reported else exc}"
    except AMQPChannelError as exc:
        raise BrokerError(f"cannot inspect the topology: {exc}") from exc
    finally:
        with contextlib.suppress(*CHANNEL_GONE):
            await channel.close()


async def _check(
    connection: AbstractConnection,
    kind: Kind,
    name: str,
    declare: Callable[[AbstractChannel], Awaitable[None]],
) -> Finding:
    if not await _exists(connection, kind, name):
        return Finding(kind, name, "missing")
    detail = await _probe(connection, declare)
    if not detail:
        return Finding(kind, name, "ok")
    argument = detail.split(":", 1)[0]
    hint = advice(kind, name, argument, dead_letter=name.endswith(".dead"))
    return Finding(kind, name, "conflict", detail, hint)


async def _exists(connection: AbstractConnection, kind: Kind, name: str) -> bool:
    channel = await connection.channel()
    try:
        if kind == "exchange":
            await channel.declare_exchange(name, passive=True)
        else:
            await channel.declare_queue(name, passive=True)
        return True
    except ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(*CHANNEL_GONE):
            await channel.close()


async def compare(
    connection: AbstractConnection, plan: Plan, reading: Reading, *, prefix: str
) -> list[Finding]:
    """Every exchange, queue and binding of ``plan`` with its status on the broker, plus extra
    bindings to queues of the plan (stale) and to other queues under ``prefix``."""
    findings: list[Finding] = []
    for ex in plan.exchanges:

        async def declare_exchange(channel: AbstractChannel, ex: ExchangeDecl = ex) -> None:
            kind = aio_pika.ExchangeType(ex.type)
            await channel.declare_exchange(ex.name, kind, durable=True, arguments=ex.arguments)

        findings.append(await _check(connection, "exchange", ex.name, declare_exchange))
    for q in plan.queues:

        async def declare_queue(channel: AbstractChannel, q: QueueDecl = q) -> None:
            await channel.declare_queue(q.name, durable=True, arguments=q.arguments)

        findings.append(await _check(connection, "queue", q.name, declare_queue))
    findings += _compare_bindings(plan, reading, prefix=prefix)
    return findings


def _compare_bindings(plan: Plan, reading: Reading, *, prefix: str) -> list[Finding]:
    expected = [_binding(b) for b in plan.bindings]
    if reading.bindings is None:
        return [
            Finding("binding", describe_binding(b), "unchecked", reading.source, binding=b)
            for b in expected
        ]
    ours = {ex.name for ex in plan.exchanges}
    planned = {q.name for q in plan.queues}
    live = {b for b in reading.bindings if b.exchange in ours}
    findings = [
        Finding("binding", describe_binding(b), "ok" if b in live else "missing", binding=b)
        for b in expected
    ]
    for b in sorted(live - set(expected), key=describe_binding):
        if b.to_exchange:
            if b.queue in ours:  # between two exchanges of the plan: ours, and stale
                findings.append(
                    Finding(
                        "binding",
                        describe_binding(b),
                        "extra",
                        "stale: apply removes it",
                        binding=b,
                    )
                )
            continue
        if b.queue in planned:
            findings.append(
                Finding(
                    "binding", describe_binding(b), "extra", "stale: apply removes it", binding=b
                )
            )
        elif b.queue.startswith(prefix):
            findings.append(
                Finding(
                    "binding",
                    describe_binding(b),
                    "extra",
                    "to a queue of no handler installed here",
                    "if its handler is gone for good, unbind or delete the queue by hand "
                    "(`rabbitmqctl delete_queue`); apply leaves it",
                    binding=b,
                )
            )
    return findings


async def reconcile(
    connection: AbstractConnection, plan: Plan, findings: list[Finding]
) -> list[str]:
    """Create what is missing and remove stale bindings of the plan's queues; conflicts and
    bindings to other queues are left alone. Returns what it did, one line each.

    Raises:
        BrokerError: the broker refused a declaration or an unbind.
    """
    done: list[str] = []
    missing = {(f.kind, f.name) for f in findings if f.status == "missing"}
    channel = await connection.channel()
    try:
        for ex in plan.exchanges:
            if ("exchange", ex.name) in missing:
                await channel.declare_exchange(
                    ex.name, aio_pika.ExchangeType(ex.type), durable=True, arguments=ex.arguments
                )
                done.append(f"declared exchange {ex.name} ({ex.type})")
        for q in plan.queues:
            if ("queue", q.name) in missing:
                await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
                done.append(f"declared queue {q.name}")
        for f in findings:
            b = f.binding
            if b is None or f.status not in ("missing", "unchecked", "extra"):
                continue
            if b.to_exchange:
                destination = await channel.get_exchange(b.queue, ensure=False)
                arguments = dict(b.arguments) or None
                if f.status == "extra" and f.detail.startswith("stale"):
                    await destination.unbind(b.exchange, b.routing_key, arguments=arguments)
                    done.append(f"removed stale binding {describe_binding(b)}")
                elif f.status in ("missing", "unchecked"):
                    await destination.bind(b.exchange, b.routing_key, arguments=arguments)
                    if f.status == "missing":
                        done.append(f"bound {describe_binding(b)}")
                continue
            if f.status == "extra" and f.detail.startswith("stale"):
                queue = await channel.get_queue(b.queue, ensure=False)
                await queue.unbind(b.exchange, b.routing_key, arguments=dict(b.arguments) or None)
                done.append(f"removed stale binding {describe_binding(b)}")
            elif f.status in ("missing", "unchecked"):
                queue = await channel.get_queue(b.queue, ensure=False)
                await queue.bind(b.exchange, b.routing_key, arguments=dict(b.arguments) or None)
                if f.status == "missing":
                    done.append(f"bound {describe_binding(b)}")
    except AMQPChannelError as exc:
        raise BrokerError(f"applying the topology failed: {exc}") from exc
    finally:
        with contextlib.suppress(*CHANNEL_GONE):
            await channel.close()
    return done
