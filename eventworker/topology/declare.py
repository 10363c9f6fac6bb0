"""Declaring a topology plan on the broker: the exchanges, then every queue, then the bindings,
over several channels at once; a redeclaration conflict names its queue and argument."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPError,
    ChannelAccessRefused,
    ChannelPreconditionFailed,
)

from eventworker.errors import BrokerError, TopologyConflictError
from eventworker.topology.layout import BindingDecl, Plan, QueueDecl

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
            await _unbind(plan.retired, target)
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
        await _unbind(plan.retired, channels[0])
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
        if b.to_exchange:
            destination = await channel.get_exchange(b.queue, ensure=False)
            await destination.bind(
                b.exchange, routing_key=b.routing_key, arguments=b.arguments or None
            )
            continue
        queue = await channel.get_queue(b.queue, ensure=False)
        await queue.bind(b.exchange, routing_key=b.routing_key, arguments=b.arguments or None)


async def _unbind(bindings: Sequence[BindingDecl], channel: AbstractChannel) -> None:
    for b in bindings:
        arguments = b.arguments or None
        if b.to_exchange:
            destination = await channel.get_exchange(b.queue, ensure=False)
            await destination.unbind(b.exchange, routing_key=b.routing_key, arguments=arguments)
        else:
            queue = await channel.get_queue(b.queue, ensure=False)
            await queue.unbind(b.exchange, routing_key=b.routing_key, arguments=arguments)
