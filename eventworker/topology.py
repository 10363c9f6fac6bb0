"""Topology as data: pure functions compute names and a declaration plan; ``apply`` runs it.

Shape (RabbitMQ 3.10+, no plugins)::

    <exchange> (topic) --binding keys--> <prefix><handler>            work queue, per handler
    retry copy --> <prefix>retry.<delay>  (one fixed TTL per queue, shared by all handlers)
         expiry --> <exchange>.return (headers) --eventworker-return-to=<work queue>--> work queue
    parked copy --> <work queue>.dead                                 dead-letter queue
    unroutable --> <exchange>.unrouted (fanout, the alternate exchange) --> unrouted queue
                   (only with the unrouted_queue setting)

Retry queues hold one delay each: RabbitMQ expires messages only at the head of a queue, so
mixed delays in one queue would block each other. Expired copies go back through a headers
exchange that matches on the failing handler's queue name, so a retry reaches that handler only,
never the others bound to the same routing key. Retry queues are quorum queues with
at-least-once dead-lettering: the TTL hop is RabbitMQ's one at-most-once hop otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPError,
    ChannelAccessRefused,
    ChannelPreconditionFailed,
)

from eventworker.envelope import RETURN_TO
from eventworker.errors import BrokerError, TopologyConflictError


@dataclass(frozen=True, slots=True)
class ExchangeDecl:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueDecl:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingDecl:
    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandlerQueues:
    """The queues that belong to one handler."""

    handler: str
    queue: str
    dead_letter_queue: str
    bindings: tuple[str, ...]
    #: One consumer at a time across all workers (the others wait): per-queue order.
    single_active_consumer: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    exchanges: tuple[ExchangeDecl, ...]
    queues: tuple[QueueDecl, ...]
    bindings: tuple[BindingDecl, ...]
    retry_queues: dict[float, str]


def work_queue(prefix: str, handler_name: str, explicit: str | None = None) -> str:
    return explicit or f"{prefix}{handler_name}"


def dead_letter_queue(queue: str) -> str:
    """``<work queue>.dead``: durable, no TTL, no length limit; parked copies wait there."""
    return f"{queue}.dead"


def delay_label(delay: float) -> str:
    """``30s``, or ``1500ms`` for a delay that is not whole seconds (queue names, metrics)."""
    ms = round(delay * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def retry_queue(prefix: str, delay: float) -> str:
    """``<prefix>retry.30s`` (or ``.1500ms`` for a delay that is not whole seconds)."""
    return f"{prefix}retry.{delay_label(delay)}"


def return_exchange(exchange: str) -> str:
    return f"{exchange}.return"


def unrouted_exchange(exchange: str) -> str:
    """The alternate exchange of ``exchange`` when the unrouted queue is on (fanout)."""
    return f"{exchange}.unrouted"


def handler_queues(
    name: str,
    bindings: Iterable[str],
    *,
    prefix: str,
    queue: str | None = None,
    single_active_consumer: bool = False,
) -> HandlerQueues:
    work = work_queue(prefix, name, queue)
    return HandlerQueues(
        handler=name,
        queue=work,
        dead_letter_queue=dead_letter_queue(work),
        bindings=tuple(bindings),
        single_active_consumer=single_active_consumer,
    )


def plan(
    handlers: Iterable[HandlerQueues],
    *,
    exchange: str,
    prefix: str,
    queue_type: str,
    delivery_limit: int,
    tiers: Iterable[float],
    initial_group_size: int = 0,
    unrouted_queue: str = "",
) -> Plan:
    """Everything to declare for ``handlers``; idempotent to apply again.

    ``initial_group_size`` (quorum queues in a cluster): how many nodes replicate each queue;
    0 leaves it to the broker (every cluster node). With ``unrouted_queue``, the exchange gets
    an alternate exchange that feeds that queue every event no binding matches (an exchange
    argument: every worker and the broker's exchange must agree on it, see
    docs/operating-dead-letters.md).
    """
    back = return_exchange(exchange)
    replicas: dict[str, Any] = (
        {"x-quorum-initial-group-size": initial_group_size} if initial_group_size else {}
    )
    quorum = {"x-queue-type": "quorum", **replicas}
    exchanges = [ExchangeDecl(exchange, "topic"), ExchangeDecl(back, "headers")]
    queues: list[QueueDecl] = []
    bindings: list[BindingDecl] = []
    if unrouted_queue:
        spare = unrouted_exchange(exchange)
        exchanges[0] = ExchangeDecl(exchange, "topic", {"alternate-exchange": spare})
        exchanges.append(ExchangeDecl(spare, "fanout"))
        queues.append(QueueDecl(unrouted_queue, {"x-queue-type": queue_type}))
        bindings.append(BindingDecl(unrouted_queue, spare, ""))
    for h in handlers:
        args: dict[str, Any] = {
            "x-queue-type": queue_type,
            # Messages the broker itself dead-letters (the quorum delivery limit that stops
            # a message crashing the worker forever) land in the handler's dead-letter queue.
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": h.dead_letter_queue,
        }
        if queue_type == "quorum":
            # The broker's own dead-lettering is at-most-once unless told otherwise;
            # at-least-once needs reject-publish (harmless here: work queues have no limit).
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
            args.update(replicas)
            if delivery_limit:
                args["x-delivery-limit"] = delivery_limit
        if h.single_active_consumer:
            args["x-single-active-consumer"] = True
        queues.append(QueueDecl(h.queue, args))
        queues.append(
            QueueDecl(
                h.dead_letter_queue,
                quorum if queue_type == "quorum" else {"x-queue-type": queue_type},
            )
        )
        bindings += [BindingDecl(h.queue, exchange, key) for key in h.bindings]
        bindings.append(BindingDecl(h.queue, back, "", {"x-match": "all", RETURN_TO: h.queue}))
    retry_queues = {}
    for delay in sorted(set(tiers)):
        name = retry_queue(prefix, delay)
        retry_queues[delay] = name
        queues.append(
            QueueDecl(
                name,
                {
                    **quorum,
                    "x-message-ttl": round(delay * 1000),
                    "x-dead-letter-exchange": back,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
    names = [q.name for q in queues]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise BrokerError(f"two handlers would share queue(s) {', '.join(sorted(duplicates))}")
    return Plan(
        exchanges=tuple(exchanges),
        queues=tuple(queues),
        bindings=tuple(bindings),
        retry_queues=retry_queues,
    )


_Item = TypeVar("_Item")

_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>\w+) '(?P<name>[^']+)'")


def conflict_error(exc: ChannelPreconditionFailed) -> TopologyConflictError | None:
    """The conflict a PRECONDITION_FAILED names (queue or exchange, and one argument), or None
    for another precondition."""
    text = str(exc)
    match = _INEQUIVALENT.search(text)
    if match is None:
        return None
    return TopologyConflictError(
        f"{match['kind']} {match['name']!r} exists with a different {match['arg']!r} than "
        f"eventworker declares ({text.split(' - ', 1)[-1]}); change the setting back, or "
        f"drain and delete the {match['kind']} so it can be declared anew (`eventworker "
        f"topology plan` says how)",
        queue=match["name"],
        argument=match["arg"],
    )


#: Channels a declaration on a connection spreads over: each object is one round trip, and a
#: quorum queue a Raft group the broker starts, so 400 queues one after another take seconds.
LANES = 8


async def apply(plan: Plan, target: AbstractChannel | AbstractConnection) -> None:
    """Declare ``plan`` (durable everything); safe to run again. On a channel, one object after
    another; on a connection, the queues and then the bindings over ``LANES`` channels of
    their own at once (the exchanges first, every queue before any binding).

    Raises:
        TopologyConflictError: a queue or exchange exists with other arguments; names both.
        BrokerError: the broker refused a declaration (for example no configure permission).
    """
    try:
        if isinstance(target, AbstractConnection):
            await _apply_parallel(plan, target)
        else:
            await _declare_exchanges(plan, target)
            await _declare_queues(plan.queues, target)
            await _bind(plan.bindings, target)
    except ChannelPreconditionFailed as exc:
        conflict = conflict_error(exc)
        if conflict is None:
            raise BrokerError(f"broker refused the topology: {exc}") from exc
        raise conflict from exc
    except ChannelAccessRefused as exc:
        raise BrokerError(f"broker refused to declare the topology: {exc}") from exc
    except AMQPChannelError as exc:
        raise BrokerError(f"declaring the topology failed: {exc}") from exc


async def _apply_parallel(plan: Plan, connection: AbstractConnection) -> None:
    channels = [await connection.channel() for _ in range(LANES)]
    try:
        await _declare_exchanges(plan, channels[0])
        await _lanes(channels, plan.queues, _declare_queues)
        await _lanes(channels, plan.bindings, _bind)
    finally:
        for channel in channels:
            with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):  # failed one
                await channel.close()


async def _lanes(
    channels: list[AbstractChannel],
    items: Sequence[_Item],
    declare: Callable[[Sequence[_Item], AbstractChannel], Coroutine[Any, Any, None]],
) -> None:
    """``declare`` a share of ``items`` on each channel at once; the first failure is raised
    as itself (so a conflict keeps its name) and the other lanes are cancelled."""
    try:
        async with asyncio.TaskGroup() as group:
            for n, channel in enumerate(channels):
                group.create_task(declare(items[n :: len(channels)], channel))
    except BaseExceptionGroup as failures:
        raise _first(failures) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _declare_exchanges(plan: Plan, channel: AbstractChannel) -> None:
    for ex in plan.exchanges:
        await channel.declare_exchange(
            ex.name, aio_pika.ExchangeType(ex.type), durable=True, arguments=ex.arguments
        )


async def _declare_queues(queues: Sequence[QueueDecl], channel: AbstractChannel) -> None:
    for q in queues:
        await channel.declare_queue(q.name, durable=True, arguments=q.arguments)


async def _bind(bindings: Sequence[BindingDecl], channel: AbstractChannel) -> None:
    for b in bindings:
        queue = await channel.get_queue(b.queue, ensure=False)
        await queue.bind(b.exchange, routing_key=b.routing_key, arguments=b.arguments or None)
