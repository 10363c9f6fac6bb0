"""Each handler resolved into a :class:`ResolvedHandler` (its queues, effective retry policy and
limits), and the topology plan they need. Pure: no broker, computed once when a worker (or a
command) starts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eventworker.handlers import Handler, RetryPolicy
from eventworker.plugins.discovery import Registration
from eventworker.settings import RetrySettings, Settings
from eventworker.topology import layout


@dataclass(frozen=True, slots=True)
class ResolvedHandler:
    """One handler's resolved specification: the handler, its queues, effective retry policy,
    timeout, concurrency and prefetch, as a worker runs it."""

    handler: Handler
    queue: str
    dead_letter_queue: str
    policy: RetryPolicy
    retry_queues: dict[float, str]
    timeout: float | None
    concurrency: int
    prefetch: int
    idempotent: bool = False
    #: Classic queues: where redelivered messages run alone, counted (see topology.layout),
    #: and how many redeliveries a message may have before it is dead-lettered (0: no limit).
    probation_queue: str | None = None
    delivery_limit: int = 0
    #: The retry delays, shortest first: computed once here, read on every failed delivery.
    tiers: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(sorted(self.retry_queues)))


def resolve(registrations: Sequence[Registration], settings: Settings) -> list[ResolvedHandler]:
    """Each handler with its queues, effective retry policy, concurrency and prefetch."""
    policies = {r.handler.name: effective_policy(r.handler, settings) for r in registrations}
    tiers = all_tiers(policies.values())
    retry_queues = {d: layout.retry_queue(settings.queue_prefix, d) for d in tiers}
    result = []
    for reg in registrations:
        h = reg.handler
        queues = layout.handler_queues(
            h.name, h.bindings, prefix=settings.queue_prefix, queue=h.queue
        )
        # One at a time keeps the order a single active consumer exists for.
        concurrency = h.concurrency or (1 if h.single_active_consumer else settings.concurrency)
        # A single active consumer takes no more than it runs: a crash then returns only the
        # messages being handled, so innocent ones behind a poison message keep their
        # delivery count (it has no probation to protect them, see worker._subscribe).
        prefetch = (
            concurrency if h.single_active_consumer else settings.effective_prefetch(concurrency)
        )
        timeout = h.timeout or settings.handler_timeout or None
        idempotent = settings.inbox.idempotent if h.idempotent is None else h.idempotent
        result.append(
            ResolvedHandler(
                handler=h,
                queue=queues.queue,
                dead_letter_queue=queues.dead_letter_queue,
                policy=policies[h.name],
                retry_queues=retry_queues,
                timeout=timeout,
                concurrency=concurrency,
                prefetch=prefetch,
                idempotent=idempotent,
                probation_queue=(
                    layout.probation_queue(queues.queue)
                    if settings.queue_type == "classic"
                    else None
                ),
                delivery_limit=settings.delivery_limit,
            )
        )
    return result


def topology_plan(
    route_list: Sequence[ResolvedHandler], settings: Settings, *, schedules: bool = False
) -> layout.Plan:
    """What to declare for these handlers; ``schedules``: with the emitters' election queue."""
    tiers = {d for r in route_list for d in r.retry_queues}
    return layout.plan(
        [
            layout.HandlerQueues(
                r.handler.name,
                r.queue,
                r.dead_letter_queue,
                r.handler.bindings,
                single_active_consumer=r.handler.single_active_consumer,
            )
            for r in route_list
        ],
        exchange=settings.exchange,
        prefix=settings.queue_prefix,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
        tiers=tiers,
        initial_group_size=settings.quorum_initial_group_size,
        unrouted_queue=settings.unrouted_queue,
        delay_levels=settings.delay_levels,
        schedules=schedules,
    )


def effective_policy(handler: Handler, settings: Settings) -> RetryPolicy:
    """Settings' ``retry_overrides[name]`` beats the handler's own policy beats ``[retry]``."""
    override = settings.retry_overrides.get(handler.name)
    if override is not None:
        return _policy(override)
    return handler.retry or _policy(settings.retry)


def _policy(retry: RetrySettings) -> RetryPolicy:
    return RetryPolicy(max_attempts=retry.max_attempts, delays=retry.delays)


def all_tiers(policies: Iterable[RetryPolicy]) -> tuple[float, ...]:
    """Every delay any policy can ask for, sorted: one retry queue is declared per delay."""
    return tuple(sorted({d for p in policies for d in p.delays}))
