"""Metrics scraped from a running worker's /metrics match what its handlers did."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from eventworker import Context, Event, Reject, RetryPolicy, handler
from eventworker.settings import Settings
from eventworker.worker.decisions import Ack, DeadLetter
from eventworker.worker.lifecycle import Worker
from eventworker.worker.metrics import Metrics
from tests.support.broker import Broker, wait_for
from tests.support.metrics import Samples, eventually, observed, scrape, start_worker_with_metrics


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_scraped_counts_are_exactly_the_mix_of_successes_retries_and_dead_letters(
    broker: Broker, settings: Settings
) -> None:
    done: list[str] = []

    @handler("mix.event", retry=RetryPolicy(max_attempts=2, delays=(0.1,)))
    async def mix(event: Event[Any], ctx: Context) -> None:
        kind = event.data["kind"]
        if kind == "reject":
            raise Reject("refused")
        if kind == "always" or (kind == "once" and event.attempt == 1):
            raise RuntimeError(kind)
        if kind == "follow":
            await ctx.publish("mix.nowhere", {})  # nobody is bound: returned, unroutable
        done.append(event.id)

    bodies = {
        "ok-1": b'{"kind": "ok"}',
        "ok-2": b'{"kind": "ok"}',
        "ok-3": b'{"kind": "ok"}',
        "once-1": b'{"kind": "once"}',
        "once-2": b'{"kind": "once"}',
        "always": b'{"kind": "always"}',
        "reject": b'{"kind": "reject"}',
        "junk": b"not json",
    }
    s = settings.model_copy(update={"metrics_poll_interval": 0.2})
    async with observed(broker, [mix], s) as (worker, _, port):
        for event_id, body in bodies.items():
            await broker.publish("mix.event", body, message_id=event_id)
        queue = worker.routes[0].queue
        dead = worker.routes[0].dead_letter_queue
        await wait_for(lambda: len(done) == 5)
        await broker.publish("mix.event", b'{"kind": "follow"}', message_id="follow")

        samples: Samples = {}

        async def settled() -> bool:
            nonlocal samples
            samples = await scrape(port)
            dead_lettered = value(
                samples, "eventworker_dead_letter_messages", handler="mix", queue=dead
            )
            return (
                dead_lettered == 4 and value(samples, "eventworker_in_flight", handler="mix") == 0
            )

        await eventually(settled)
    m = {"handler": "mix"}
    # 3 ok + 2 x 2 once + 2 always + reject + junk + follow (retried once, then dead-lettered)
    assert value(samples, "eventworker_messages_received_total", **m) == 3 + 4 + 2 + 1 + 1 + 2
    assert value(samples, "eventworker_messages_acked_total", **m) == 5
    assert value(samples, "eventworker_messages_retried_total", **m, delay="100ms") == 4
    dead_letters = {
        reason: value(samples, "eventworker_messages_dead_lettered_total", **m, reason=reason)
        for reason in ("exception", "rejected", "decode_error", "schema_error", "timeout")
    }
    assert dead_letters == {
        "exception": 2,  # always, and follow (its publish failed twice)
        "rejected": 1,
        "decode_error": 1,
        "schema_error": 0,
        "timeout": 0,
    }
    assert value(samples, "eventworker_messages_requeued_total", **m) == 0
    assert value(samples, "eventworker_duplicates_skipped_total", **m) == 0
    publishes = {
        (kind, status): value(samples, "eventworker_publishes_total", **m, kind=kind, status=status)
        for kind in ("event", "retry", "dead_letter")
        for status in ("confirmed", "unroutable", "nacked")
    }
    assert {k: v for k, v in publishes.items() if v} == {
        ("event", "unroutable"): 2,
        ("retry", "confirmed"): 4,
        ("dead_letter", "confirmed"): 4,
    }
    outcomes = {"ack": 5, "retry": 4, "dead_letter": 4}
    for outcome, count in outcomes.items():
        got = value(samples, "eventworker_handler_duration_seconds_count", **m, outcome=outcome)
        assert got == count, outcome
    assert value(samples, "eventworker_message_age_seconds_count", **m) == 13
    assert value(samples, "eventworker_in_flight", **m) == 0
    assert value(samples, "eventworker_prefetch", **m) == worker.routes[0].prefetch
    assert value(samples, "eventworker_concurrency", **m) == worker.routes[0].concurrency
    assert value(samples, "eventworker_ready") == 1
    assert value(samples, "eventworker_state", state="running") == 1
    assert value(samples, "eventworker_reconnects_total") == 0
    # Read from the broker: the work queue is empty and consumed, the tier is empty.
    assert value(samples, "eventworker_queue_messages", handler="mix", queue=queue) == 0
    assert value(samples, "eventworker_queue_consumers", handler="mix", queue=queue) == 1
    tier = worker.routes[0].retry_queues[0.1]
    assert value(samples, "eventworker_retry_queue_messages", delay="100ms", queue=tier) == 0
    assert value(samples, "eventworker_dead_letter_oldest_age_seconds", handler="mix", queue=dead)
    assert await broker.count(dead) == 4


async def test_in_flight_counts_running_handlings_and_age_grows_for_dead_lettered_messages(
    broker: Broker, settings: Settings
) -> None:
    release = asyncio.Event()

    @handler("busy.event", concurrency=3)
    async def busy(event: Event[Any], ctx: Context) -> None:
        if event.id == "dead-letter":
            raise Reject("dead_lettered")
        await release.wait()

    s = settings.model_copy(update={"metrics_poll_interval": 0.1})
    async with observed(broker, [busy], s) as (worker, _, port):
        dead = worker.routes[0].dead_letter_queue
        await broker.publish("busy.event", b"{}", message_id="dead-letter")
        for n in range(2):
            await broker.publish("busy.event", b"{}", message_id=f"hold-{n}")
        await wait_for(lambda: worker.in_flight == 2)
        samples = await scrape(port)
        assert value(samples, "eventworker_in_flight", handler="busy") == 2

        key = (
            "eventworker_dead_letter_oldest_age_seconds",
            frozenset({("handler", "busy"), ("queue", dead)}),
        )
        ages: list[float] = []

        async def age_grew() -> bool:
            age = (await scrape(port)).get(key, 0.0)
            if age > 0:
                ages.append(age)
            return len(ages) > 1 and ages[-1] > ages[0]

        await eventually(age_grew)  # the estimate grows while the queue stays non-empty
        release.set()
        await wait_for(lambda: worker.in_flight == 0)
        samples = await scrape(port)
        assert value(samples, "eventworker_in_flight", handler="busy") == 0
        await broker.take_all(dead, expect=1)

        async def age_reset() -> bool:
            return (await scrape(port)).get(key) == 0

        await eventually(age_reset)


def test_every_series_exists_at_zero_before_any_message(settings: Settings) -> None:
    @handler("zero.event", retry=RetryPolicy(max_attempts=3, delays=(1, 2.5)))
    async def zero(event: Event[Any], ctx: Context) -> None:
        pass

    from tests.support.broker import registrations

    metrics = Metrics()
    metrics.watch(Worker(registrations(zero), settings))
    text = metrics.exposition()[0].decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    z = {"handler": "zero"}
    assert value(samples, "eventworker_messages_received_total", **z) == 0
    assert value(samples, "eventworker_messages_retried_total", **z, delay="1s") == 0
    assert value(samples, "eventworker_messages_retried_total", **z, delay="2500ms") == 0
    assert value(samples, "eventworker_messages_dead_lettered_total", **z, reason="timeout") == 0
    assert value(samples, "eventworker_ready") == 0
    assert value(samples, "eventworker_state", state="starting") == 1
    assert not any(name.endswith("_created") for name, _ in samples)


async def test_run_serves_metrics_and_probes_and_logs_json_lines(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    broker.track_installed("greet")
    with socket.socket() as probe:  # a free port for the worker to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "worker.log"
    process = start_worker_with_metrics(
        log, settings, "--handler", "greet", "--log-format", "json", "--metrics-port", str(port)
    )
    try:

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(ready, timeout=30)
        await broker.publish("demo.greet", b'{"name": "Ada"}', message_id="hello-1")

        async def counted() -> bool:
            samples = await scrape(port)
            return value(samples, "eventworker_messages_acked_total", handler="greet") == 1

        await eventually(counted)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    [hello] = [line for line in lines if line["message"] == "hello, Ada"]
    assert (hello["handler"], hello["event_id"], hello["event_type"]) == (
        "greet",
        "hello-1",
        "demo.greet",
    )
    assert any("serving /metrics, /healthz and /readyz" in line["message"] for line in lines)
    assert any(line["message"].startswith("drained") for line in lines)


async def test_exact_retries_are_counted_as_exact_and_the_delay_levels_depths_are_read(
    broker: Broker, settings: Settings
) -> None:
    from eventworker import Publisher, Retry
    from eventworker.topology import delays

    @handler("wait.event", name="waits")
    async def waits(event: Event[Any], ctx: Context) -> None:
        if event.data["kind"] == "retry":
            raise Retry(delay=40)

    s = settings.model_copy(update={"metrics_poll_interval": 0.2, "delay_levels": 25})
    async with observed(broker, [waits], s) as (_, _, port):
        async with Publisher.connect(s.url, exchange=s.exchange, delay_levels=25) as publisher:
            await publisher.publish("wait.event", {"kind": "retry"})
            await publisher.publish("wait.event", {"kind": "later"}, delay=3)
        level = {k: delays.level_name(s.exchange, k) for k in (1, 5)}
        samples: Samples = {}

        async def waiting() -> bool:
            nonlocal samples
            samples = await scrape(port)
            # 40 s = 101000: the retry copy waits in level 5 first; 3 s = 11: level 1 first.
            return (
                samples.get(
                    (
                        "eventworker_delayed_messages",
                        frozenset({"level": "5", "queue": level[5]}.items()),
                    )
                )
                == 1
                and samples.get(
                    (
                        "eventworker_delayed_messages",
                        frozenset({"level": "1", "queue": level[1]}.items()),
                    )
                )
                == 1
            )

        await eventually(waiting)
    assert value(samples, "eventworker_messages_retried_total", handler="waits", delay="exact") == 1
    assert (
        value(samples, "eventworker_delayed_messages", level="0", queue=f"{s.exchange}.delay.0")
        == 0
    )


async def test_counts_and_durations_per_handler_and_outcome_stay_apart(
    settings: Settings,
) -> None:
    """Acks take a shortcut through series looked up once per handler: the counts, durations
    and ages still land on the right handler and outcome, and other outcomes are unaffected."""
    from datetime import UTC, datetime, timedelta

    from tests.support.broker import registrations

    @handler("apart.one")
    async def one(event: Event[Any], ctx: Context) -> None:
        pass

    @handler("apart.two")
    async def two(event: Event[Any], ctx: Context) -> None:
        pass

    metrics = Metrics()
    worker = Worker(registrations(one, two), settings)
    metrics.watch(worker)
    first, second = worker.routes
    sent = datetime.now(UTC) - timedelta(seconds=90)
    event = Event("e-1", "apart.one", None, sent, {}, {}, 1, "e-1")
    for _ in range(3):
        metrics.received(first, event)
        metrics.settled(first, event, Ack(), moved=True, seconds=0.002)
    metrics.received(second, event)
    metrics.settled(second, event, Ack(), moved=True, seconds=0.2)
    metrics.received(second, event)
    metrics.settled(second, event, DeadLetter("timeout"), moved=True, seconds=3.0)
    text = metrics.exposition()[0].decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    a, b = {"handler": first.handler.name}, {"handler": second.handler.name}
    assert value(samples, "eventworker_messages_received_total", **a) == 3
    assert value(samples, "eventworker_messages_received_total", **b) == 2
    assert value(samples, "eventworker_messages_acked_total", **a) == 3
    assert value(samples, "eventworker_messages_acked_total", **b) == 1
    assert value(samples, "eventworker_messages_dead_lettered_total", **b, reason="timeout") == 1
    duration = "eventworker_handler_duration_seconds"
    assert value(samples, f"{duration}_count", **a, outcome="ack") == 3
    assert value(samples, f"{duration}_bucket", **a, outcome="ack", le="0.005") == 3
    assert value(samples, f"{duration}_count", **b, outcome="ack") == 1
    assert value(samples, f"{duration}_bucket", **b, outcome="ack", le="0.1") == 0
    assert value(samples, f"{duration}_count", **b, outcome="dead_letter") == 1
    age = "eventworker_message_age_seconds"
    assert value(samples, f"{age}_count", **a) == 3
    assert value(samples, f"{age}_bucket", **a, le="60.0") == 0
    assert value(samples, f"{age}_bucket", **a, le="120.0") == 3
