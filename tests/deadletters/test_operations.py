"""Dead-letter operations against the real broker: reading leaves order and content alone, a
replay moves exactly the selected messages, each copy confirmed before its original goes."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import orjson
import pytest

from eventworker.deadletters import operations
from eventworker.deadletters import reader as queue_reader
from eventworker.deadletters.letter import Letter
from eventworker.deadletters.operations import DeadLetterQueue, Selection
from eventworker.envelope import RETURN_TO
from eventworker.errors import BrokerError
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.deadletters import (
    IDS,
    H,
    declare,
    drain,
    drain_ids,
    fill_dead_letters,
    ids_in,
)


async def replay(
    broker: Broker, dlq: DeadLetterQueue, select: Selection | None = None, **options: Any
) -> tuple[operations.ReplayOutcome, list[Letter]]:
    seen: list[Letter] = []
    kwargs: dict[str, Any] = {
        "limit": None,
        "rate": None,
        "dry_run": False,
        "publish_timeout": 5.0,
        **options,
    }
    outcome = await operations.replay(
        broker.connection, dlq, select=select or Selection(), on_move=seen.append, **kwargs
    )
    return outcome, seen


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_show_reads_without_taking_and_leaves_the_order(
    broker: Broker, settings: Settings, queue_type: str
) -> None:
    dlq = await declare(broker, settings.model_copy(update={"queue_type": queue_type}))
    await fill_dead_letters(broker, dlq.queue, IDS)
    shown = await operations.show(broker.connection, dlq, limit=4, preview_chars=20)
    assert [p.id for p in shown] == IDS[:4]
    assert [p.reason for p in shown] == ["schema_error", "exception"] * 2
    assert shown[0].preview == '{"n":0}'
    assert await ids_in(broker, dlq.queue) == IDS


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_replay_moves_only_the_selected_and_leaves_the_rest_in_order(
    broker: Broker, settings: Settings, queue_type: str
) -> None:
    dlq = await declare(broker, settings.model_copy(update={"queue_type": queue_type}))
    await fill_dead_letters(broker, dlq.queue, IDS)
    outcome, seen = await replay(broker, dlq, Selection(frozenset({"m2", "m5", "m7"})))
    assert outcome.error is None and outcome.scanned == 10
    assert [p.id for p in outcome.moved] == [p.id for p in seen] == ["m2", "m5", "m7"]
    assert await ids_in(broker, dlq.queue) == [i for i in IDS if i not in {"m2", "m5", "m7"}]
    back = await broker.take_all(dlq.return_to or "", expect=3)
    assert [m.message_id for m in back] == ["m2", "m5", "m7"]
    # Copies for the worker: attempt reset, diagnosis dropped, replay counted, the producer's
    # headers and the body kept.
    headers = back[0].headers
    assert headers[H + "attempt"] == 1
    assert headers[H + "replays"] == 1
    assert headers[H + "routing-key"] == "dlq.event"
    assert headers["tenant"] == "acme"
    assert H + "reason" not in headers and H + "last-failure" not in headers
    assert back[0].exchange == dlq.exchange  # came through the return exchange
    assert back[0].body == orjson.dumps({"n": 2})


async def test_replay_selects_by_reason_and_stops_at_the_limit(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS)
    outcome, _ = await replay(broker, dlq, Selection(reason="exception"), limit=2)
    assert [p.id for p in outcome.moved] == ["m1", "m3"]
    assert await ids_in(broker, dlq.queue) == [i for i in IDS if i not in {"m1", "m3"}]


async def test_a_dry_run_moves_nothing(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:3])
    outcome, seen = await replay(broker, dlq, dry_run=True)
    assert [p.id for p in seen] == [p.id for p in outcome.moved] == IDS[:3]
    assert await broker.count(dlq.return_to or "") == 0
    assert await ids_in(broker, dlq.queue) == IDS[:3]


async def test_the_rate_bounds_copies_per_second(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:6])
    started = time.monotonic()
    outcome, _ = await replay(broker, dlq, rate=10.0)
    assert len(outcome.moved) == 6
    assert time.monotonic() - started >= 0.5  # six copies at ten a second: 0.5 s at least


async def test_replay_refuses_when_the_work_queue_does_not_exist(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:1])
    gone = DeadLetterQueue("gone", dlq.queue, dlq.exchange, f"{settings.queue_prefix}gone")
    with pytest.raises(BrokerError, match="start a worker"):
        await replay(broker, gone)
    assert await ids_in(broker, dlq.queue) == IDS[:1]


async def test_a_copy_nobody_receives_is_not_confirmed_and_its_original_stays(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:3])
    # The work queue exists but is not bound to the return exchange: the copy is returned.
    channel = await broker.connection.channel()
    await channel.declare_queue(f"{settings.queue_prefix}unbound", durable=True)
    await channel.close()
    broker._queues.add(f"{settings.queue_prefix}unbound")
    unbound = DeadLetterQueue("x", dlq.queue, dlq.exchange, f"{settings.queue_prefix}unbound")
    outcome, _ = await replay(broker, unbound)
    assert outcome.error is not None and outcome.error.status == "unroutable"
    assert outcome.moved == ()
    assert await ids_in(broker, dlq.queue) == IDS[:3]


@pytest.mark.parametrize("window", [16, 256])
async def test_copies_refused_part_way_through_a_window_leave_exactly_their_originals(
    broker: Broker, settings: Settings, window: int
) -> None:
    # A work queue that takes 40 messages and refuses (nacks) every publish beyond: the copies
    # go out many to a socket write, and the broker nacks the 41st and later ones in the
    # middle of a write. Exactly the first 40 move; the rest stay dead-lettered, in order.
    dlq = await declare(broker, settings)
    ids = [f"w{n:04}" for n in range(300)]
    await fill_dead_letters(broker, dlq.queue, ids)
    limited = f"{settings.queue_prefix}limited"
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(
        limited, durable=True, arguments={"x-max-length": 40, "x-overflow": "reject-publish"}
    )
    broker._queues.add(limited)
    await queue.bind(dlq.exchange, "", arguments={"x-match": "all", RETURN_TO: limited})
    await channel.close()
    outcome, seen = await replay(
        broker, DeadLetterQueue("x", dlq.queue, dlq.exchange, limited), window=window
    )
    assert outcome.error is not None and outcome.error.status == "nacked"
    assert [p.id for p in outcome.moved] == [p.id for p in seen] == ids[:40]
    assert await drain_ids(broker, limited) == ids[:40]
    assert await drain_ids(broker, dlq.queue) == ids[40:]


async def test_purge_deletes_the_selected_or_everything(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:5])
    assert await operations.purge(broker.connection, dlq, select=Selection(frozenset({"m1"}))) == 1
    await broker.wait_count(dlq.queue, 4)
    assert await operations.purge(broker.connection, dlq, select=None) == 4
    assert await broker.count(dlq.queue) == 0


async def test_stats_count_every_message_and_sample_age_and_reasons(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:5])
    stats = await operations.stats(broker.connection, dlq, sample=3)
    assert (stats.exists, stats.count, stats.sampled) == (True, 5, 3)
    assert stats.reasons == (("schema_error", 2), ("exception", 1))
    assert stats.oldest_age is not None and stats.oldest_age > 0
    missing = DeadLetterQueue("m", f"{settings.queue_prefix}missing.dead", "x", None)
    assert (await operations.stats(broker.connection, missing, sample=3)).exists is False
    assert await ids_in(broker, dlq.queue) == IDS[:5]


async def test_export_writes_every_message_and_leaves_them_dead_lettered(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:3])
    out = io.BytesIO()
    assert await operations.export(broker.connection, dlq, out, limit=None) == 3
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["properties"]["message_id"] for r in records] == IDS[:3]
    assert records[0]["routing_key"] == "dlq.event"
    assert await ids_in(broker, dlq.queue) == IDS[:3]


@pytest.mark.parametrize(
    ("version", "counted"),
    [("3.10.8", False), ("3.13.7", False), ("4.0.1", True), ("4.2.0", True), ("4.3.0", False),
     ("5.0.0", False), ("", False), ("weird", False)],
)  # fmt: skip
def test_reads_count_towards_the_delivery_limit_on_rabbitmq_4_0_to_4_2(
    version: str, counted: bool
) -> None:
    assert queue_reader.counts_reads(version) is counted


async def test_the_broker_version_is_the_one_it_announced(broker: Broker) -> None:
    assert queue_reader.broker_version(broker.connection).count(".") >= 2


async def test_a_replay_of_thousands_moves_each_once_in_order(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    ids = [f"b{n:04}" for n in range(3000)]
    await fill_dead_letters(broker, dlq.queue, ids)
    # A window far smaller than the queue: copies go out, confirms come back and originals are
    # acked many times over while reading goes on.
    outcome, seen = await replay(broker, dlq, window=64)
    assert outcome.error is None and outcome.scanned == 3000
    assert [p.id for p in seen] == [p.id for p in outcome.moved] == ids
    assert await drain_ids(broker, dlq.return_to or "") == ids  # each once, in order
    assert await broker.count(dlq.queue) == 0


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_a_selection_moves_exactly_the_selected_and_keeps_the_others_in_order(
    broker: Broker, settings: Settings, queue_type: str
) -> None:
    dlq = await declare(broker, settings.model_copy(update={"queue_type": queue_type}))
    ids = [f"s{n:04}" for n in range(1000)]
    await fill_dead_letters(broker, dlq.queue, ids)
    # Half the messages held back, far more than the consumer's prefetch (twice the window):
    # the reader must start new consumers to go on.
    outcome, _ = await replay(broker, dlq, Selection(reason="exception"), window=8)
    odd, even = ids[1::2], ids[0::2]
    assert [p.id for p in outcome.moved] == odd and outcome.scanned == 1000
    assert await drain_ids(broker, dlq.return_to or "") == odd
    assert await drain_ids(broker, dlq.queue) == even


async def test_a_stopped_replay_leaves_each_message_in_exactly_one_place(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    ids = [f"i{n:04}" for n in range(2000)]
    await fill_dead_letters(broker, dlq.queue, ids)
    stop = asyncio.Event()
    seen: list[Letter] = []

    def on_move(moved: Letter) -> None:
        seen.append(moved)
        if len(seen) == 300:
            stop.set()  # as the first Ctrl-C does, with copies in flight

    with pytest.raises(operations.ReplayInterrupted) as caught:
        await operations.replay(
            broker.connection,
            dlq,
            select=Selection(),
            limit=None,
            rate=None,
            dry_run=False,
            publish_timeout=5.0,
            on_move=on_move,
            stop=stop,
            window=128,
        )
    moved = [p.id for p in caught.value.outcome.moved]
    # The copies in flight at the stop were waited for and their originals acked: what moved is
    # a prefix, at the work queue once; the rest is dead-lettered, in order; nothing is in both.
    assert len(moved) >= 300 and moved == [p.id for p in seen] == ids[: len(moved)]
    assert await drain_ids(broker, dlq.return_to or "") == moved
    # Every other one is back in the queue (counted as the broker settles: a quorum queue
    # takes back through Raft, a moment later, anything a closed channel held).
    await broker.wait_count(dlq.queue, len(ids) - len(moved))
    left = await drain(broker, dlq.queue)
    assert [m.message_id for m in left] == ids[len(moved) :]
    # What the consumer was given before the stop moved too: the rest was never read, so
    # nothing had to be handed back (on a quorum queue, a full turn of the queue).
    assert not any(m.redelivered for m in left)


async def test_purge_and_export_of_thousands_are_exact(broker: Broker, settings: Settings) -> None:
    dlq = await declare(broker, settings)
    ids = [f"p{n:04}" for n in range(2000)]
    await fill_dead_letters(broker, dlq.queue, ids)
    out = io.BytesIO()
    assert await operations.export(broker.connection, dlq, out, limit=None) == 2000
    exported = [orjson.loads(line)["properties"]["message_id"] for line in out.getvalue().split()]
    assert exported == ids
    limited = io.BytesIO()
    assert await operations.export(broker.connection, dlq, limited, limit=5) == 5
    assert len(limited.getvalue().splitlines()) == 5
    purged = await operations.purge(broker.connection, dlq, select=Selection(reason="exception"))
    assert purged == 1000
    assert await drain_ids(broker, dlq.queue) == ids[0::2]  # the others, in order
