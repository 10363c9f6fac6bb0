"""The probe every benchmarked consumer calls once per handled message, and its reader.

Standard library only: the consumers of FastStream and Dramatiq import it in their own
virtualenvs. Each consumer process owns one small memory-mapped slot file in the directory named
by ``$BENCH_PROBE_DIR``; the harness sums the slots of all processes while they run, so a
drain with several processes (or threads) is seen as one. A slot holds the count, the monotonic
time of the first and of the last message, the process CPU time at the first message, and
latency samples. ``time.monotonic`` is ``CLOCK_MONOTONIC``, one clock for every process of the
machine, so times of different processes compare.

The cost per message is one lock, one clock read and one ``pack_into`` (about 1 µs), the same for
every consumer measured.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: The directory of slot files; unset means the probe does nothing (a consumer run by hand).
DIR_ENV = "BENCH_PROBE_DIR"
#: How many latency samples a slot keeps (the first ones; a latency run sends fewer).
LATENCY_CAPACITY = 100_000
#: count, first message, last message (monotonic s), CPU time at the first message (s), pid
_HEAD = struct.Struct("<qdddq")
_SAMPLE = struct.Struct("<d")
_SIZE = _HEAD.size + LATENCY_CAPACITY * _SAMPLE.size


class _Slot:
    def __init__(self, directory: str) -> None:
        path = Path(directory) / f"{os.getpid()}.slot"
        with path.open("w+b") as file:
            file.truncate(_SIZE)
            self.map = mmap.mmap(file.fileno(), _SIZE)
        self.count = 0
        self.first = time.monotonic()
        # CPU spent before the first message (imports, connecting) is not the drain's.
        self.cpu = time.process_time()
        self.lock = threading.Lock()


_slot: _Slot | None = None
_create = threading.Lock()


def _forget_parent_slot() -> None:
    global _slot
    _slot = None


# A forked worker process (Dramatiq) must count in a slot file of its own.
os.register_at_fork(after_in_child=_forget_parent_slot)


def _current() -> _Slot | None:
    global _slot
    if _slot is None:
        directory = os.environ.get(DIR_ENV)
        if not directory:
            return None
        with _create:
            if _slot is None:
                _slot = _Slot(directory)
    return _slot


def start() -> None:
    """Start the clock and the CPU account without counting a message: a handler whose
    first attempts fail calls this, so their cost falls inside the measured span."""
    _current()


def hit(sent_ns: int | None = None) -> None:
    """Count one handled message; ``sent_ns`` (``time.monotonic_ns()`` at publish) adds a
    latency sample."""
    slot = _slot or _current()
    if slot is None:
        return
    with slot.lock:
        now = time.monotonic()
        n = slot.count = slot.count + 1
        _HEAD.pack_into(slot.map, 0, n, slot.first, now, slot.cpu, os.getpid())
        if sent_ns is not None and n <= LATENCY_CAPACITY:
            _SAMPLE.pack_into(slot.map, _HEAD.size + (n - 1) * _SAMPLE.size, now - sent_ns / 1e9)


@dataclass(frozen=True, slots=True)
class Reading:
    """One process's slot as the harness reads it."""

    pid: int
    count: int
    first: float
    last: float
    cpu_at_first: float
    latencies: tuple[float, ...] = ()


def read(directory: Path, *, latencies: bool = False) -> list[Reading]:
    """Every slot written so far in ``directory`` (latency samples only when asked: a slot
    file is large, and the harness polls the heads many times a second)."""
    readings = []
    for path in sorted(directory.glob("*.slot")):
        with path.open("rb") as file:
            head = file.read(_HEAD.size)
            if len(head) < _HEAD.size:
                continue
            count, first, last, cpu, pid = _HEAD.unpack(head)
            if not count:
                continue
            samples: tuple[float, ...] = ()
            if latencies:
                n = min(count, LATENCY_CAPACITY)
                samples = struct.unpack(f"<{n}d", file.read(n * _SAMPLE.size))
        readings.append(Reading(pid, count, first, last, cpu, samples))
    return readings


def total(readings: list[Reading]) -> int:
    return sum(r.count for r in readings)
