"""Topology as data: pure functions compute names and a declaration plan (``declare`` applies it).

Shape (RabbitMQ 3.10+, no plugins)::

    <exchange> (topic) --binding keys--> <prefix><handler>            work queue, per handler
    retry copy --> <prefix>retry.<delay>  (one fixed TTL per queue, shared by all handlers)
         expiry --> <exchange>.return (headers) --eventworker-return-to=<work queue>--> work queue
    dead-letter copy --> <work queue>.dead                                 dead-letter queue
    unroutable --> <exchange>.unrouted (fanout, the alternate exchange) --> unrouted queue
                   (only with the unrouted_queue setting)
    redelivered (classic queues) --> <work queue>.probation             run one at a time
    delayed (with delay_levels) --> <exchange>.delay.<k> ... .delay.0 --> <exchange>.delay.delivery
                   --0.#, 1.#--> <exchange> --*. ... .*.<binding key>--> work queue
                   --return.#--> <exchange>.return (exact retry delays; topology/delays.py)
    <prefix>schedules.leader       the schedule emitters' election (only with schedules)

A classic queue keeps no delivery count, so a message that kills its worker would come back for
ever. On classic queues each handler also has a probation queue: a message its work queue
redelivers (a worker stopped while holding it) is moved there with a count of its own, and runs
alone (prefetch 1), so that a crash takes only it back; past ``delivery_limit`` it is
dead-lettered. Quorum queues count deliveries themselves (``x-delivery-limit``).

Retry queues hold one delay each: RabbitMQ expires messages only at the head of a queue, so
mixed delays in one queue would block each other. Expired copies go back through a headers
exchange that matches on the failing handler's queue name, so a retry reaches that handler only,
never the others bound to the same routing key. Retry queues are quorum queues with
at-least-once dead-lettering: the TTL hop is RabbitMQ's one at-most-once hop otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eventworker.envelope import RETURN_TO
from eventworker.errors import BrokerError
from eventworker.topology import delays


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
    """``exchange`` routes to ``queue`` by ``routing_key``; with ``to_exchange``, ``queue``
    names an exchange (an exchange-to-exchange binding)."""

    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    to_exchange: bool = False


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
    #: Bindings an earlier layout made that would now route wrongly: every declaration removes
    #: them (removing one that is not there does nothing), so an upgrade needs no manual step.
    retired: tuple[BindingDecl, ...] = ()


def work_queue(prefix: str, handler_name: str, explicit: str | None = None) -> str:
    return explicit or f"{prefix}{handler_name}"


def dead_letter_queue(queue: str) -> str:
    """``<work queue>.dead``: durable, no TTL, no length limit; dead-letter copies wait there."""
    return f"{queue}.dead"


def probation_queue(queue: str) -> str:
    """``<work queue>.probation`` (classic queues): redelivered messages run there alone."""
    return f"{queue}.probation"


def delay_label(delay: float) -> str:
    """``30s``, or ``1500ms`` for a delay that is not whole seconds (queue names, metrics)."""
    ms = round(delay * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def retry_queue(prefix: str, delay: float) -> str:
    """``<prefix>retry.30s`` (or ``.1500ms`` for a delay that is not whole seconds)."""
    return f"{prefix}retry.{delay_label(delay)}"


#: What follows the prefix in a retry queue's name: ``retry.30s`` or ``retry.1500ms``.
_RETRY_TIER = re.compile(r"retry\.[0-9]+m?s")


def is_retry_queue(prefix: str, queue: str) -> bool:
    """True for a name :func:`retry_queue` gives with ``prefix``, whatever the delay: a tier
    that the retry policies no longer name (delays changed since) is still one of ours."""
    return queue.startswith(prefix) and _RETRY_TIER.fullmatch(queue[len(prefix) :]) is not None


def schedules_queue(prefix: str) -> str:
    """The schedule emitters' election queue: quorum, single active consumer; it holds the
    token that carries the last tick of each schedule (see ``worker/emitter.py``)."""
    return f"{prefix}schedules.leader"


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
    delay_levels: int = 0,
    schedules: bool = False,
) -> Plan:
    """Everything to declare for ``handlers``; idempotent to apply again.

    ``initial_group_size`` (quorum queues in a cluster): how many nodes replicate each queue;
    0 leaves it to the broker (every cluster node). With ``unrouted_queue``, the exchange gets
    an alternate exchange that feeds that queue every event no binding matches (an exchange
    argument: every worker and the broker's exchange must agree on it, see
    docs/operating-dead-letters.md). ``delay_levels`` (0: none) adds the levels of delayed
    delivery (see :mod:`eventworker.topology.delays`), once for the exchange. ``schedules``
    adds the schedule emitters' election queue.
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
        if queue_type == "classic":
            # No delivery limit on a classic queue: the worker counts redeliveries itself.
            dead_letter = {k: v for k, v in args.items() if k.startswith("x-dead-letter")}
            probation = {"x-queue-type": "classic", **dead_letter}
            queues.append(QueueDecl(probation_queue(h.queue), probation))
        bindings += [BindingDecl(h.queue, exchange, key) for key in h.bindings]
        if delay_levels:
            bindings += [
                BindingDecl(h.queue, exchange, delays.delayed_binding(key, delay_levels))
                for key in h.bindings
            ]
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
    retired: list[BindingDecl] = []
    if delay_levels:
        _delay_levels(exchange, delay_levels, quorum, exchanges, queues, bindings)
        # The delivery exchange once passed everything on with "#": it would hand retry copies
        # (return.<digits>) to the event exchange too, where a queue bound with "#" takes them.
        delivery = delays.delivery_exchange(exchange)
        retired.append(BindingDecl(exchange, delivery, "#", to_exchange=True))
    if schedules:
        queues.append(
            QueueDecl(schedules_queue(prefix), {**quorum, "x-single-active-consumer": True})
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
        retired=tuple(retired),
    )


def _delay_levels(
    exchange: str,
    levels: int,
    quorum: dict[str, Any],
    exchanges: list[ExchangeDecl],
    queues: list[QueueDecl],
    bindings: list[BindingDecl],
) -> None:
    """The levels of delayed delivery for ``exchange``: level ``k`` waits ``2**k`` s in its
    queue when its digit is 1 and passes the message down when it is 0; the delivery exchange
    hands every event on to ``exchange`` (which the handlers' delayed bindings match), and every
    retry copy to the return exchange (which routes it to the failing handler's queue only)."""
    delivery = delays.delivery_exchange(exchange)
    for level in range(levels):
        name = delays.level_name(exchange, level)
        below = delays.level_name(exchange, level - 1) if level else delivery
        exchanges.append(ExchangeDecl(name, "topic"))
        queues.append(
            QueueDecl(
                name,
                {
                    **quorum,
                    "x-message-ttl": 2**level * 1000,
                    # No x-dead-letter-routing-key: the next level reads the same digits.
                    "x-dead-letter-exchange": below,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        bindings.append(BindingDecl(name, name, delays.wait_binding(level, levels)))
        bindings.append(
            BindingDecl(below, name, delays.skip_binding(level, levels), to_exchange=True)
        )
    exchanges.append(ExchangeDecl(delivery, "topic"))
    for key in delays.event_bindings():
        bindings.append(BindingDecl(exchange, delivery, key, to_exchange=True))
    back = return_exchange(exchange)
    bindings.append(BindingDecl(back, delivery, delays.return_binding(), to_exchange=True))
