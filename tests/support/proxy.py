"""A TCP proxy between a client under test and a broker, switched by the test: pass through,
blackhole, cut, cut after N bytes or frames from the broker, or flaky.

Our own, about 200 lines: aiomisc (whose pytest plugin has a ``TCPProxy``) is neither a
dependency of this project nor installed here, and what these tests need most, a blackhole
that holds back closes too and a cut on an AMQP frame boundary, takes little code. It runs
its own event loop in a thread, so it keeps forwarding while the test's loop is blocked
(``WorkerProcess.wait_started`` polls with ``time.sleep``); every switch is a plain method,
safe to call from any thread and effective when it returns.

Modes:

- :meth:`Proxy.pass_through`: every byte forwarded as it comes.
- :meth:`Proxy.blackhole`: bytes either way are read and dropped; the sockets stay open and
  nothing, not even a close, reaches the other side, as on a path that drops every packet. A
  connection opened meanwhile is accepted (the listener is local) and hears nothing. Back to
  pass-through, every connection that lost a byte is closed, both sides, as TCP resets a
  connection whose peer gave up once packets flow again; the others carry on.
- :meth:`Proxy.cut`: every open connection closed now, both sides.
- :meth:`Proxy.cut_after`: pass-through until ``n`` more bytes, or AMQP frames, came from the
  broker, counted across connections; the first ``n`` are delivered, then every connection is
  cut (``times`` over, the count starting again after each cut). Bytes cut anywhere, a frame
  torn; frames cut between two, so a client has read a reply whole and finds its connection
  gone at its next step.
- :meth:`Proxy.flaky`: every connection cut at random intervals, each chunk delayed at random
  (order kept); seeded, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from yarl import URL

_T = TypeVar("_T")
#: How long a switch may take on the proxy's own loop.
SWITCH_TIMEOUT = 10.0


@dataclass(eq=False)
class _Link:
    """One client connection and, unless it came during a blackhole, its broker connection."""

    client: asyncio.StreamWriter
    broker: asyncio.StreamWriter | None = None
    broken: bool = False  # lost bytes in a blackhole: closed when the path is back
    frame_head: bytearray = field(default_factory=bytearray)  # of the frame from the broker
    frame_left: int = 0  # bytes of that frame's payload and end octet still to come
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.broker):
            if writer is not None:
                writer.close()


class Proxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``host:target_port``; use as a context
    manager, or :meth:`start` and :meth:`close`."""

    def __init__(self, host: str, target_port: int, *, seed: int = 0) -> None:
        self.host, self.target_port = host, target_port
        self.port = 0
        self.rng = random.Random(seed)
        #: Connections accepted, and connections the proxy closed (cut or after a blackhole).
        self.accepted = 0
        self.cuts = 0
        self._links: set[_Link] = set()
        self._blackhole = False
        self._budget: int | None = None  # bytes or frames from the broker before the next cut
        self._frames = False
        self._cuts_left = 0
        self._budget_size = 0
        self._delay: tuple[float, float] | None = None
        self._flaky: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def url(self, url: str) -> str:
        """``url`` (an ``amqp://`` URL of the target) with this proxy as its host and port."""
        return str(URL(url).with_host("127.0.0.1").with_port(self.port))

    # -- life ------------------------------------------------------------------------------
    def start(self) -> Proxy:
        self._thread.start()
        self._server = self._run(
            asyncio.start_server(self._accept, "127.0.0.1", 0), timeout=SWITCH_TIMEOUT
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def close(self) -> None:
        async def shut() -> None:
            self._stop_flaky()
            assert self._server is not None
            self._server.close()
            self._cut_all(count=False)

        with contextlib.suppress(Exception):
            self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- switches --------------------------------------------------------------------------
    def pass_through(self) -> None:
        self._call(self._heal)

    def blackhole(self) -> None:
        def go() -> None:
            self._heal()
            self._blackhole = True

        self._call(go)

    def cut(self) -> None:
        self._call(self._cut_all)

    def cut_after(self, n: int, *, frames: bool = False, times: int = 1) -> None:
        """Cut every connection once ``n`` more bytes (``frames``: AMQP frames) came from the
        broker; ``times`` over."""

        def go() -> None:
            self._heal()
            self._budget, self._budget_size, self._cuts_left = n, n, times
            self._frames = frames

        self._call(go)

    def flaky(
        self, *, every: tuple[float, float] = (0.3, 2.0), delay: tuple[float, float] = (0, 0.02)
    ) -> None:
        """Cut every connection after a pause drawn from ``every`` seconds, again and again;
        delay each chunk by a time drawn from ``delay``."""

        def go() -> None:
            self._heal()
            self._delay = delay
            self._flaky = self._loop.create_task(self._cut_now_and_then(every))

        self._call(go)

    # -- on the proxy's loop ---------------------------------------------------------------
    def _heal(self) -> None:
        self._stop_flaky()
        self._delay, self._budget, self._cuts_left = None, None, 0
        if self._blackhole:
            self._blackhole = False
            for link in [link for link in self._links if link.broken]:
                self._drop(link)

    def _stop_flaky(self) -> None:
        if self._flaky is not None:
            self._flaky.cancel()
            self._flaky = None

    async def _cut_now_and_then(self, every: tuple[float, float]) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*every))
            self._cut_all()

    def _cut_all(self, count: bool = True) -> None:
        for link in list(self._links):
            self._drop(link, count)

    def _drop(self, link: _Link, count: bool = True) -> None:
        if link in self._links:
            self._links.discard(link)
            self.cuts += count
            link.close()
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        if self._blackhole:
            link.broken = True  # the broker never hears of it
            link.tasks.append(self._loop.create_task(self._pump(link, reader, None)))
            return
        try:
            up_reader, link.broker = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            self._drop(link, count=False)  # as the broker's own refusal would look
            return
        if link not in self._links:  # cut while connecting
            link.close()
            return
        link.tasks += [
            self._loop.create_task(self._pump(link, reader, link.broker)),
            self._loop.create_task(self._pump(link, up_reader, writer, from_broker=True)),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        from_broker: bool = False,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self._blackhole or writer is None:
                    link.broken = True
                    continue
                if self._delay is not None:
                    await asyncio.sleep(self.rng.uniform(*self._delay))
                cut = False
                ends = self._frame_ends(link, data) if from_broker else []
                if from_broker and self._budget is not None:
                    if self._frames:
                        if len(ends) >= self._budget:
                            data, cut = data[: ends[self._budget - 1]], True
                        else:
                            self._budget -= len(ends)
                    elif len(data) >= self._budget:
                        data, cut = data[: self._budget], True
                    else:
                        self._budget -= len(data)
                if cut:  # before the await below: another connection may read meanwhile
                    self._cuts_left -= 1
                    self._budget = self._budget_size if self._cuts_left > 0 else None
                writer.write(data)
                await writer.drain()
                if cut:
                    self._cut_all()
                    return
        except (ConnectionError, OSError):
            pass
        # An end of stream: passed on as a close, unless the path is a blackhole (silence).
        if not (self._blackhole or link.broken):
            self._drop(link, count=False)

    @staticmethod
    def _frame_ends(link: _Link, data: bytes) -> list[int]:
        """The offsets in ``data``, a chunk from the broker, where a frame ends (read on every
        chunk, so a switch to counting frames starts on a frame's boundary)."""
        ends, at = [], 0
        while at < len(data):
            if link.frame_left == 0:  # a frame header: type, channel, payload size
                take = min(7 - len(link.frame_head), len(data) - at)
                link.frame_head += data[at : at + take]
                at += take
                if len(link.frame_head) == 7:
                    link.frame_left = int.from_bytes(link.frame_head[3:7]) + 1
                    link.frame_head.clear()
                continue
            take = min(link.frame_left, len(data) - at)
            link.frame_left -= take
            at += take
            if link.frame_left == 0:
                ends.append(at)
        return ends

    # -- from other threads ----------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        self._run(run())

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = SWITCH_TIMEOUT) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)
