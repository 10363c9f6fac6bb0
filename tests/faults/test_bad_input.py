"""F: bad input on the consumer side (catalogue F1-F8, docs/reliability.md).

Each test publishes raw AMQP messages (bypassing every check of ours) to a handler with a
model, about 1,000 good ones interleaved with the bad ones, and checks what the catalogue asks of
every F test: all good ones processed; each bad one dead-lettered exactly once with attempts = 1 and
its reason; the worker alive with no unhandled traceback; at most one ERROR line per bad
message, naming its id; good messages' p99 latency under a second (plus load slack).
"""

from __future__ import annotations

import os
import pickle
import re
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from eventworker import envelope
from tests.faults.plugin import Spec
from tests.faults.processes import WorkerProcess
from tests.faults.rig import LOAD_SLACK, Rig

JSON = "application/json"
#: A log record's first line; anything else in the log is a record spilling over lines.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


@dataclass(frozen=True, slots=True)
class Bad:
    """A message the handler must not run on, and the reason it must be dead-lettered with (None:
    it is in fact acceptable and must be processed, as the project documents)."""

    body: bytes
    reason: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"bad-{uuid.uuid4().hex[:12]}")

    def message(self) -> aio_pika.Message:
        props: dict[str, Any] = {"content_type": JSON, **self.properties}
        return aio_pika.Message(
            self.body,
            message_id=self.id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **{k: v for k, v in props.items() if v is not None},
        )


@dataclass(slots=True)
class Outcome:
    worker: WorkerProcess
    good: list[str]
    dead_lettered: dict[str, dict[str, Any]]
    log: str


async def run_with_bad_input(
    rig: Rig, name: str, bad: list[Bad], *, good: int = 1000, **worker_options: Any
) -> Outcome:
    spec = Spec(name, (f"{name}.event",), model=True, max_attempts=3, delays=(0.5,))
    worker = rig.started([spec], **worker_options)
    key = f"{name}.event"
    good_ids = [f"good-{uuid.uuid4().hex[:6]}-{i}" for i in range(good)]
    messages = [
        (key, Bad(orjson.dumps({"n": i}), None, id=event_id).message())
        for i, event_id in enumerate(good_ids)
    ]
    step = max(1, good // (len(bad) + 1))
    for k, b in enumerate(bad):
        messages.insert((k + 1) * step + k, (key, b.message()))
    await rig.publish_raw(messages)
    acceptable = [b.id for b in bad if b.reason is None]
    await rig.wait_processed(good_ids + acceptable)
    await rig.wait_dead_lettered(name, len(bad) - len(acceptable))
    await rig.finish(workers=[worker])

    dead_lettered = {row["id"]: row for row in rig.ledger.dead_lettered_rows()}
    assert Counter(row["id"] for row in rig.ledger.dead_lettered_rows()).most_common(1)[0][1] == 1
    for b in bad:
        if b.reason is None:
            assert b.id in rig.ledger.processed(), f"{b.id} was not processed"
            continue
        row = dead_lettered.get(b.id)
        assert row is not None, f"{b.id} ({b.reason}) was not dead-lettered"
        assert (row["reason"], row["attempts"]) == (b.reason, 1), (b.id, row["reason"])
        assert not rig.ledger.invocations(b.id), f"the handler ran on {b.id}"
    log = worker.all_logs()
    for b in bad:
        errors = [line for line in log.splitlines() if " ERROR " in line and b.id in line]
        assert len(errors) <= 1, f"{len(errors)} ERROR lines for {b.id}"
    assert good_p99(rig, good_ids) < 1.0 + LOAD_SLACK
    return Outcome(worker, good_ids, dead_lettered, log)


def good_p99(rig: Rig, ids: list[str]) -> float:
    published = rig.ledger.published_at()
    done = {c.id: c.finished for c in rig.ledger.invocations() if c.outcome == "ok"}
    latencies = sorted((done[i] or 0) - published[i] for i in ids)
    return latencies[int(len(latencies) * 0.99) - 1]


async def test_f1_bodies_that_are_not_json_objects_are_dead_lettered_at_once(
    shared_rig: Rig,
) -> None:
    bad = [Bad(body, "decode_error") for body in (b"not json", b"", b"\x00" * 1024, b"{", b"[1,2")]
    bad.append(Bad(b"42", "schema_error"))
    await run_with_bad_input(shared_rig, "f1", bad)


class _Sentinel:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


async def test_f2_content_types_other_than_json_are_dead_lettered_and_never_unpickled(
    shared_rig: Rig,
) -> None:
    sentinel = shared_rig.folder / "unpickled"
    audit = shared_rig.folder / "audit.log"
    bad = [
        Bad(b'{"n": 1}', "unsupported_content_type", {"content_type": "text/plain"}),
        Bad(b'{"n": 1}', None, {"content_type": None}),  # documented: missing means JSON
        Bad(
            pickle.dumps(_Sentinel(sentinel)),
            "unsupported_content_type",
            {"content_type": "application/x-python-serialize"},
        ),
        Bad(
            b'{"n": 1}',
            "unsupported_content_type",
            {"content_type": "application/json; charset=latin-1"},
        ),
    ]
    await run_with_bad_input(shared_rig, "f2", bad, audit_log=audit)
    assert not sentinel.exists(), "the pickle was loaded"
    assert not audit.exists() or audit.read_text() == "", audit.read_text()


CANARY = "s3cr3t-canary-9f1c"


async def test_f3_schema_errors_are_dead_lettered_with_field_paths_and_no_input_values(
    shared_rig: Rig,
) -> None:
    bad = [
        Bad(b'{"m": 1}', "schema_error"),
        Bad(b'{"n": "abc"}', "schema_error"),
        Bad(b'{"n": 1, "unknown": "extra"}', None),  # the handler's model decides: kept here
        Bad(orjson.dumps({"n": CANARY}), "schema_error"),
    ]
    outcome = await run_with_bad_input(shared_rig, "f3", bad)
    assert "n: missing" in outcome.dead_lettered[bad[0].id]["headers"]["x-eventworker-error"]
    assert "n: int_parsing" in outcome.dead_lettered[bad[1].id]["headers"]["x-eventworker-error"]
    assert CANARY not in outcome.log
    assert CANARY not in str(outcome.dead_lettered[bad[3].id]["headers"])


def exactly(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes that the handler's model accepts."""
    head = b'{"n": 1, "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def test_f4_bodies_over_the_limit_are_dead_lettered_unread_and_memory_stays_bounded(
    shared_rig: Rig,
) -> None:
    limit = shared_rig.settings.max_body_bytes
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in 64 KiB
    bad = [
        Bad(b"[" + b"1," * (10 * 1024 * 1024) + b"1]", "too_large"),  # 20 MiB
        Bad(exactly(limit + 1), "too_large"),
        Bad(exactly(limit), None),
        Bad(bomb, "unsupported_content_type", {"content_encoding": "deflate"}),
    ]
    rig = shared_rig
    spec = Spec("f4", ("f4.event",), model=True)
    probe = rig.started([spec])
    baseline = probe.memory_kib("VmRSS")
    probe.stop()
    outcome = await run_with_bad_input(rig, "f4", bad, good=200)
    peak = outcome.worker.memory_kib("VmHWM")
    largest = max(len(b.body) for b in bad) // 1024
    # A delivery is read whole (AMQP has no way to refuse it unread), and its dead-letter copy is
    # one more: a few times the largest body, never a backlog of them.
    assert peak - baseline < 4 * largest + 20 * 1024, f"peak {peak} KiB, baseline {baseline}"


async def test_f5_depth_and_number_bombs_are_dead_lettered_quickly_without_a_crash(
    shared_rig: Rig,
) -> None:
    bombs = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"1" * 1_000_000,
        b"1e999",
    ]
    for body in bombs:
        started = time.perf_counter()
        with pytest.raises(Exception, match="decode_error"):
            envelope.decode_body(body, JSON, None, max_body_bytes=2**20)
        assert time.perf_counter() - started < 0.2
    bad = [Bad(body, "decode_error") for body in bombs]
    bad.append(Bad(b"[" * (10 * 1024 * 1024), "too_large"))
    outcome = await run_with_bad_input(shared_rig, "f5", bad)
    assert outcome.worker.stop() == 0, "the worker did not exit cleanly"
    import orjson as codec

    assert tuple(int(p) for p in codec.__version__.split(".")[:3]) >= (3, 9, 15)


async def test_f6_invalid_utf8_surrogates_and_nan_are_refused_duplicate_keys_keep_the_last(
    shared_rig: Rig,
) -> None:
    bad = [
        Bad(b'{"n": 1, "id": "\xff\xfe"}', "decode_error"),
        Bad(b'{"n": 1, "id": "\\ud800"}', "decode_error"),
        Bad(b'{"n": NaN}', "decode_error"),
        Bad(b'{"n": Infinity}', "decode_error"),
        Bad(b'{"n": 1, "n": 2}', None),
    ]
    outcome = await run_with_bad_input(shared_rig, "f6", bad)
    for b in bad[:2]:
        assert outcome.dead_lettered[b.id]["body_sha256"] == sha256(b.body)
    [call] = shared_rig.ledger.invocations(bad[4].id)
    assert orjson.loads(call.data or "{}")["n"] == 2, "duplicate keys: the last one wins"


def sha256(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


async def test_f7_an_event_no_handler_binds_is_reported_unroutable_not_dropped(
    shared_rig: Rig,
) -> None:
    """Every handler has a queue of its own bound with its keys, so an event no handler binds
    reaches no queue: our publishers (mandatory) report it, nothing waits in a queue."""
    rig = shared_rig
    worker = rig.started([Spec("f7", ("f7.orders.created",), model=True)])
    [created] = await rig.publish("f7.orders.created", [{"n": 1}])
    results = await rig.publish_results("f7.orders.refunded", [{"n": 2}], ["f7-refunded"])
    assert [r.status for r in results] == ["unroutable"]
    await rig.wait_processed([created])
    await rig.finish(workers=[worker])
    assert rig.queues()[rig.work_queue("f7")].ready == 0


async def test_f7_an_event_a_plain_producer_sends_to_no_binding_is_kept(shared_rig: Rig) -> None:
    """A producer that does not publish mandatory (any plain AMQP client) gets no return for
    an event no handler binds. With ``unrouted_queue`` on, the exchange's alternate exchange
    keeps such events in that queue, to be read and replayed like dead-lettered ones (reason
    "unrouted"): kept, not dropped, and nothing stuck in the work queue."""
    rig = shared_rig.with_settings(unrouted_queue=f"{shared_rig.prefix}unrouted")
    unrouted = rig.settings.unrouted_queue
    worker = rig.started([Spec("f7u", ("f7u.orders.created",), model=True)])
    created = [Bad(orjson.dumps({"n": n}), None) for n in range(20)]
    refunded = [Bad(orjson.dumps({"n": n}), "unrouted") for n in range(5)]
    interleaved = [("f7u.orders.created", b.message()) for b in created]
    for k, b in enumerate(refunded):
        interleaved.insert(4 * k + 2, ("f7u.orders.refunded", b.message()))
    await rig.publish_raw(interleaved)
    await rig.wait_processed([b.id for b in created])
    await rig.finish(workers=[worker])

    dead_lettered = {row["id"]: row for row in rig.ledger.dead_lettered_rows()}
    assert dead_lettered.keys() == {b.id for b in refunded}
    assert {row["queue"] for row in dead_lettered.values()} == {unrouted}
    assert {row["reason"] for row in dead_lettered.values()} == {"unrouted"}
    assert not any(rig.ledger.invocations(b.id) for b in refunded), "a handler ran on it"
    assert rig.queues()[rig.work_queue("f7u")].ready == 0


async def test_f8_forged_and_hostile_headers_neither_steer_nor_break_the_worker(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    worker = rig.started([Spec("f8", ("f8.event",), model=True, delays=(0.5,))])
    spy = f"spy.{rig.prefix}"  # outside the prefix: not one of the queues that must drain
    channel = await rig.connection.channel()
    spy_queue = await channel.declare_queue(spy, durable=True)
    await spy_queue.bind(rig.settings.exchange, spy)  # a CC of the spy's name reaches it
    await channel.close()
    rig.other_queues.add(spy)
    hostile = "line\nbreak\r\x1b[31mred\x1b[0m {secret} {0}"
    fails_once = {"n": 1, "fail_attempts": 1}
    cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "forged-attempt": ({"x-eventworker-attempt": 999}, fails_once),
        "junk-x-death": ({"x-death": [{"count": "junk", "queue": 5}, "text", 7]}, fails_once),
        "cc": ({"CC": [spy]}, fails_once),
        "control-chars": (
            {"note": hostile},
            {"n": 1, "fault": "raise", "error": hostile, "fault_calls": 1},
        ),
        "many-headers": ({f"h{i:05d}": 1 for i in range(10_000)}, fails_once),
        "deep-headers": ({"deep": nested(100)}, fails_once),
    }
    ids = {name: f"f8-{name}-{uuid.uuid4().hex[:6]}" for name in cases}
    ids["control-chars"] += hostile
    await rig.publish_raw(
        [
            (
                "f8.event",
                aio_pika.Message(
                    orjson.dumps(body),
                    message_id=ids[name],
                    content_type=JSON,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
            )
            for name, (headers, body) in cases.items()
        ]
    )
    await rig.wait_processed(list(ids.values()))
    await rig.finish(workers=[worker])

    for name, event_id in ids.items():
        attempts = [c.attempt for c in rig.ledger.invocations(event_id)]
        assert attempts == [1, 2], f"{name}: attempts {attempts}"
    assert rig.ledger.dead_lettered_ids() == set()
    assert await rig.view.count(spy) == 1, "CC was carried into a retried copy"
    log = worker.all_logs()
    assert "\x1b" not in log, "a terminal escape reached the log"
    spilled = [line for line in log.splitlines() if not RECORD.match(line)]
    assert not spilled, f"log records spill over lines: {spilled[:3]}"
    assert "{secret}" in log, "a header value was treated as a format string"


def nested(depth: int) -> dict[str, Any]:
    table: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        table = {"d": table}
    return table
