"""B: the network path between a worker and the broker goes silent or flaky (reliability guide
§7 B4, B5), through a TCP proxy (tests/support/proxy.py) that only this test's connections use,
so these run on the shared broker."""

from __future__ import annotations

import asyncio
import time

import pytest

from eventworker.settings import Settings
from tests.faults import traffic
from tests.faults.plugin import Spec
from tests.faults.rig import LOAD_SLACK, Rig
from tests.support.proxy import Proxy

#: The worker's heartbeat in these tests, in seconds. aiormq gives up on a connection that
#: sent no frame for (heartbeat + 1) x 3 seconds.
HEARTBEAT = 2
STUCK_AFTER = (HEARTBEAT + 1) * 3


def through(rig: Rig, proxy: Proxy, **changes: object) -> Settings:
    """The rig's settings with the broker reached through ``proxy``."""
    url = type(rig.settings.url)(proxy.url(rig.url))
    return rig.settings.model_copy(update={"url": url, **changes})


async def test_b4_a_silent_connection_is_detected_by_heartbeat_and_replaced(
    shared_rig: Rig, proxy: Proxy
) -> None:
    """The worker's path to the broker drops every byte for longer than the heartbeat allows,
    sockets open and silent (no RST, no FIN). The worker must give up on both connections by
    heartbeat, keep trying while the path is dead, reconnect when it is back, by itself, and
    hand nothing to the dead-letter queue; every confirmed event is handled."""
    rig = shared_rig
    spec = Spec("b4", ("b4.event",))
    worker = rig.started(
        [spec], settings=through(rig, proxy, heartbeat=HEARTBEAT, connect_timeout=3.0)
    )
    n = 800
    ids = traffic.new_ids(n, "b4")
    events = traffic.outgoing("b4.event", [{"n": i, "sleep": 0.05} for i in range(n)], ids)
    # The producer reaches the broker directly: only the worker's path goes silent.
    publishing = asyncio.create_task(
        traffic.paced(rig.url, rig.settings.exchange, rig.ledger, events, per_second=40)
    )
    await rig.wait(lambda: rig.ledger.count_processed() >= 100, what="100 processed")
    proxy.blackhole()
    silent_since = time.monotonic()
    await rig.wait(
        lambda: "connection to the broker lost" in worker.log(),
        timeout=STUCK_AFTER + 3 + LOAD_SLACK,
        what="the worker giving up on the silent connection",
    )
    detected = time.monotonic() - silent_since
    done_when_detected = rig.ledger.count_processed()
    await asyncio.sleep(max(0.0, silent_since + STUCK_AFTER + 5 - time.monotonic()))
    done_in_silence = rig.ledger.count_processed() - done_when_detected
    proxy.pass_through()
    healed = time.monotonic()
    await rig.wait(
        lambda: "reconnected: 1 queue(s) consuming again" in worker.log(),
        timeout=30,
        what="the worker consuming again",
    )
    back = time.monotonic() - healed
    results = await publishing
    assert len(results) == n
    await rig.wait_processed(rig.ledger.confirmed(), timeout=120)
    report = await rig.finish(workers=[worker])

    assert len(worker.pids) == 1 and worker.alive(), "the worker was restarted"
    assert rig.ledger.dead_lettered_ids() == set(), "the silence dead-lettered events"
    assert done_in_silence == 0, f"{done_in_silence} handled on a dead connection"
    assert detected <= STUCK_AFTER + 3 + LOAD_SLACK
    print(
        f"silence detected after {detected:.1f}s, consuming again {back:.1f}s after the path "
        f"came back; {proxy.cuts} connection(s) closed by the proxy; dup {report.dup}"
    )


@pytest.mark.parametrize(
    ("n", "seconds"),
    [
        pytest.param(1000, 15, id="15s"),
        pytest.param(10_000, 120, id="2min", marks=pytest.mark.slow),
    ],
)
async def test_b5_a_flaky_path_loses_nothing_confirmed(
    shared_rig: Rig, proxy: Proxy, n: int, seconds: int
) -> None:
    """Worker and producer both reach the broker through a path that cuts every connection
    every 0.3 to 2 s and delays each chunk by up to 10 ms. Once the path heals, every
    confirmed event is handled, none is dead-lettered, and the worker was never restarted."""
    rig = shared_rig
    spec = Spec("b5", ("b5.event",))
    settings = through(rig, proxy, heartbeat=HEARTBEAT, connect_timeout=3.0)
    worker = rig.started([spec], settings=settings)
    ids = traffic.new_ids(n, "b5")
    events = traffic.outgoing("b5.event", [{"n": i, "sleep": 0.01} for i in range(n)], ids)
    proxy.flaky(every=(0.3, 2.0), delay=(0.0, 0.01))
    results = await traffic.paced(
        proxy.url(rig.url), rig.settings.exchange, rig.ledger, events, per_second=n // seconds
    )
    cuts = proxy.cuts
    proxy.pass_through()
    assert len(results) == n
    await rig.wait_processed(rig.ledger.confirmed(), timeout=120)
    report = await rig.finish(workers=[worker])

    assert len(worker.pids) == 1 and worker.alive(), "the worker was restarted"
    assert rig.ledger.dead_lettered_ids() == set()
    reconnects = worker.log().count("reconnected: 1 queue(s) consuming again")
    assert cuts >= seconds // 2 and reconnects >= 3, (cuts, reconnects)
    print(
        f"{cuts} connections cut, {reconnects} reconnects of the worker; "
        f"{len(rig.ledger.confirmed())} of {n} confirmed, {len(rig.ledger.unknown())} unknown, "
        f"recovered {report.recovered}, dup {report.dup}"
    )


async def test_b5_a_cut_at_any_point_of_setting_up_a_session_is_survived(
    shared_rig: Rig, proxy: Proxy
) -> None:
    """The worker's connections are cut after the 1st, 2nd, ... 40th AMQP frame from the
    broker, counted from a fresh reconnect: after every reply of setting up a session
    (handshakes, declarations, channels, consumers), so its next step finds the connection
    gone. After each, the worker consumes again by itself, and finally handles every event;
    it never exits."""
    rig = shared_rig
    spec = Spec("b5c", ("b5c.event",))
    worker = rig.started([spec], settings=through(rig, proxy, heartbeat=HEARTBEAT))
    points = range(1, 41)
    for n, after in enumerate(points):
        proxy.cut()
        proxy.cut_after(after, frames=True)
        await rig.wait(
            lambda: worker.log().count("reconnected: 1 queue(s) consuming again") > n,  # noqa: B023 - awaited here
            timeout=30,
            what=f"the worker consuming again after a cut at frame {after} of a session",
        )
    proxy.pass_through()
    ids = await rig.publish("b5c.event", [{"n": i} for i in range(200)])
    await rig.wait_processed(ids)
    await rig.finish(workers=[worker])
    assert len(worker.pids) == 1 and worker.alive(), "the worker was restarted"
    print(f"{proxy.cuts} connections cut after each of the first {len(points)} frames of a session")


async def test_b5_a_publisher_cut_at_any_point_of_setting_up_its_session_sees_a_connection_error(
    shared_rig: Rig, proxy: Proxy
) -> None:
    """A publisher's connection cut after the 1st, 2nd, ... 8th AMQP frame from the broker
    (handshake, channel, confirms, the exchange's check) fails with an error a producer retries
    on (a connection error, a broker error), never a bare ``Exception``; then it publishes."""
    from eventworker.errors import BrokerError
    from eventworker.publishing.channel import ConfirmChannel, Outgoing

    rig = shared_rig
    spec = Spec("b5p", ("b5p.event",))
    await rig.declare([spec])
    url = proxy.url(rig.url)
    failures: list[BaseException] = []
    # Three rounds: whether the cut lands while aiormq waits for a reply varies by run.
    for after in [*range(1, 9)] * 3:
        proxy.pass_through()
        proxy.cut_after(after, frames=True)
        try:
            async with ConfirmChannel.connect(
                url, exchange=rig.settings.exchange, timeout=5, connect_timeout=5
            ) as publisher:
                await publisher.send(Outgoing("b5p.event", b"{}", f"cut-{after}"))
        except (BrokerError, *traffic.CONNECTION_ERRORS) as exc:
            failures.append(exc)
    assert failures, "no cut landed in a session's set-up"
    assert all(type(exc) is not Exception for exc in failures), failures
    proxy.pass_through()
    async with ConfirmChannel.connect(url, exchange=rig.settings.exchange, timeout=5) as publisher:
        result = await publisher.send(Outgoing("b5p.event", b"{}", "after-the-cuts"))
    assert result.status == "confirmed"
