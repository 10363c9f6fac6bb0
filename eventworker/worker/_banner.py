"""What a worker logs once it consumes: where it is connected, its middleware, and each handler
with its queue, bindings, limits and retry policy; warnings for settings that cannot work as
meant."""

from __future__ import annotations

from collections.abc import Sequence

from loguru import logger

from eventworker.handlers import Middleware
from eventworker.plugins.discovery import Registration
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import Settings


def log_start(
    s: Settings,
    routes: Sequence[ResolvedHandler],
    registrations: Sequence[Registration],
    middleware: Sequence[Middleware] = (),
) -> None:
    logger.info(
        "worker connected to {}: exchange {!r}, {} handler(s), {} queue type, grace {:g}s, "
        "max_inflight_bytes {}",
        s.redacted_url(),
        s.exchange,
        len(routes),
        s.queue_type,
        s.grace,
        f"{s.max_inflight_bytes:,}" if s.max_inflight_bytes else "0 (no bound)",
    )
    if middleware:
        logger.info("middleware, outermost first: {}", ", ".join(m.name for m in middleware))
    by_name = {r.handler.name: r.plugin for r in registrations}
    for unknown in sorted(set(s.retry_overrides) - set(by_name)):
        logger.warning("retry_overrides names {!r}, which is no handler of this worker", unknown)
    for route in routes:
        plugin = by_name[route.handler.name]
        p = route.policy
        logger.info(
            "handler {} from {} {} (plugin {}): queue {} bound to {}; concurrency {}, "
            "prefetch {}, timeout {}, retry {}x after {}s",
            route.handler.name,
            plugin.distribution,
            plugin.version,
            plugin.entry_point,
            route.queue,
            ", ".join(route.handler.bindings),
            route.concurrency,
            route.prefetch,
            f"{route.timeout:g}s" if route.timeout else "none",
            p.max_attempts,
            "/".join(f"{d:g}" for d in p.delays),
        )
        limit = s.broker_consumer_timeout
        if limit and (route.timeout is None or route.timeout >= limit):
            # The broker closes the channel of a delivery unacked for longer than its
            # consumer_timeout; every other in-flight message on it is redelivered.
            logger.warning(
                "handler {}: timeout {} is not below the broker's consumer timeout {:g}s "
                "(broker_consumer_timeout): a long handling gets its channel closed",
                route.handler.name,
                f"{route.timeout:g}s" if route.timeout else "none",
                limit,
            )
