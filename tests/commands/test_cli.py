"""The ``eventworker`` command, run as a user would: a subprocess against the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventworker.errors import ExitCode
from eventworker.settings import Settings
from tests.support.broker import Broker, wait_for
from tests.support.cli import CANARY, EVENTWORKER, bound_queue, cli, env_for
from tests.support.queues import drain


def test_version_and_help_work_as_a_module_too(settings: Settings) -> None:
    version = cli(settings, "--version")
    assert version.returncode == 0 and "eventworker 0." in version.stdout
    module = subprocess.run(
        [sys.executable, "-m", "eventworker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 0
    for command in ("run", "publish", "handlers"):
        assert command in module.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["demo.greet", "{not json"], None, "invalid JSON"),
        (["demo.greet"], '{"a": NaN}', "invalid JSON"),
        (["demo.*", "{}"], None, "wildcard"),
        (["", "{}"], None, "empty"),
        (["k" * 256, "{}"], None, "255 bytes"),
        (["demo.greet", "{}", "--header", "CC=audit"], None, "reserved"),
        (["demo.greet", "{}", "--header", "x-death=1"], None, "reserved"),
        (["demo.greet", "{}", "--id", "i" * 300], None, "--id"),
        # Bytes that are not UTF-8 reach argv as lone surrogates; subprocess sends them back.
        (["demo.greet", "{}", "--id", "o-\udcff"], None, "--id is not valid UTF-8"),
        (["demo.greet", "{}", "--correlation-id", "\udce9"], None, "--correlation-id is not"),
        (["demo.greet", "{}", "--header", "tenant=\udcff"], None, "value of 'tenant' is not"),
        (["demo.greet", "{}", "--header", "t\udcff=x"], None, "name is not valid UTF-8"),
    ],
    ids=[
        "bad-json",
        "nan-stdin",
        "wildcard",
        "empty-key",
        "long-key",
        "cc",
        "x-death",
        "long-id",
        "id-not-utf8",
        "correlation-id-not-utf8",
        "header-value-not-utf8",
        "header-name-not-utf8",
    ],
)
def test_publish_refuses_bad_input_before_connecting(
    settings: Settings, args: list[str], stdin: str | None, message: str
) -> None:
    # Port 1: any attempt to connect would fail with another exit code.
    result = cli(
        settings,
        "publish",
        *args,
        stdin=stdin,
        EVENTWORKER_URL=f"amqp://guest:{CANARY}@127.0.0.1:1/",
    )
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr
    assert message.replace("wildcard", "'*' or '#'") in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_publish_refuses_a_bad_line_of_a_file_naming_it(settings: Settings, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"n": 1}\n{"n": 2\n')
    result = cli(
        settings,
        "publish",
        "demo.greet",
        "--file",
        str(events),
        EVENTWORKER_URL="amqp://guest:guest@127.0.0.1:1/",
    )
    assert result.returncode == ExitCode.INVALID_INPUT
    assert "line 2" in result.stderr


def test_publish_to_an_unreachable_broker_fails_without_the_password(settings: Settings) -> None:
    result = cli(
        settings,
        "publish",
        "demo.greet",
        "{}",
        EVENTWORKER_URL=f"amqp://guest:{CANARY}@127.0.0.1:1/",
    )
    assert result.returncode == ExitCode.BROKER_UNREACHABLE
    assert "amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert CANARY not in result.stdout + result.stderr


async def test_publish_with_a_wrong_password_is_an_auth_error(
    broker: Broker, settings: Settings
) -> None:
    url = settings.url.get_secret_value().replace("guest:guest@", f"guest:{CANARY}@")
    result = cli(settings, "publish", "demo.greet", "{}", EVENTWORKER_URL=url)
    assert result.returncode == ExitCode.BROKER_AUTH
    assert CANARY not in result.stdout + result.stderr


async def test_publish_to_a_missing_exchange_says_so(broker: Broker, settings: Settings) -> None:
    result = cli(settings, "publish", "demo.greet", "{}")
    assert result.returncode == ExitCode.BROKER_REFUSED
    assert settings.exchange in result.stderr and "does not exist" in result.stderr


async def test_an_unroutable_event_is_an_error(broker: Broker, settings: Settings) -> None:
    await bound_queue(broker, "bound.key")
    result = cli(settings, "publish", "nobody.listens.here", "{}")
    assert result.returncode == ExitCode.FAILED
    assert "0 confirmed" in result.stdout
    assert "unroutable" in result.stderr


async def test_publish_sends_properties_and_headers(broker: Broker, settings: Settings) -> None:
    queue = await bound_queue(broker, "orders.#")
    result = cli(
        settings,
        "publish",
        "orders.created",
        "--id",
        "evt-1",
        "--correlation-id",
        "corr-1",
        "--header",
        "tenant=acme",
        stdin='{"order_id": "o1"}\n',
    )
    assert result.returncode == 0, result.stderr
    assert "1 confirmed" in result.stdout and "evt-1" in result.stdout
    [message] = await broker.take_all(queue, expect=1)
    assert message.body == b'{"order_id": "o1"}'
    assert (message.message_id, message.correlation_id, message.type) == (
        "evt-1",
        "corr-1",
        "orders.created",
    )
    assert message.content_type == "application/json"
    assert message.headers["tenant"] == "acme"
    assert message.delivery_mode == 2


async def test_publish_of_ten_thousand_events_from_a_file_confirms_all(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    queue = await bound_queue(broker, "bulk.#")
    events = tmp_path / "bulk.jsonl"
    events.write_text("".join(json.dumps({"n": n, "pad": "x" * 200}) + "\n" for n in range(10_000)))
    result = cli(settings, "publish", "bulk.load", "--file", str(events))
    assert result.returncode == 0, result.stderr
    assert "10000 event(s)" in result.stdout and "10000 confirmed" in result.stdout
    assert "events/s" in result.stdout
    assert await broker.count(queue) == 10_000


async def test_publish_window_sends_the_file_in_order_and_refuses_a_window_of_none(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    queue = await bound_queue(broker, "bulk.#")
    events = tmp_path / "bulk.jsonl"
    events.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(500)))
    refused = cli(settings, "publish", "bulk.load", "--file", str(events), "--window", "0")
    assert refused.returncode == 2 and "--window" in refused.stderr
    result = cli(settings, "publish", "bulk.load", "--file", str(events), "--window", "7")
    assert result.returncode == 0, result.stderr
    assert "500 confirmed" in result.stdout
    taken = await drain(broker, queue, expect=500)
    assert [json.loads(m.body)["n"] for m in taken] == list(range(500))


def test_handlers_json_lists_the_installed_plugin(settings: Settings) -> None:
    result = cli(settings, "handlers", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"greet", "flaky", "broken", "bill_order", "audit_orders"} <= rows.keys()
    bill = rows["bill_order"]
    assert set(bill) == {
        "name",
        "plugin",
        "distribution",
        "bindings",
        "queue",
        "dead_letter_queue",
        "retry",
        "idempotent",
    }
    assert bill["plugin"] == "demo"
    assert bill["idempotent"] is False
    assert bill["distribution"].startswith("eventworker-example ")
    assert bill["bindings"] == ["orders.created", "orders.*.created"]
    assert bill["queue"] == f"{settings.queue_prefix}bill_order"
    assert bill["dead_letter_queue"] == f"{settings.queue_prefix}bill_order.dead"
    assert bill["retry"] == {"max_attempts": 4, "delays": [1.0, 10.0, 60.0]}
    assert rows["audit_orders"]["plugin"] == "audit"


class Worker:
    """``eventworker run`` in a subprocess, its log collected in a file."""

    def __init__(self, settings: Settings, log: Path, *args: str) -> None:
        self.log = log
        self.stream = log.open("w")
        self.process = subprocess.Popen(
            [EVENTWORKER, "run", *args],
            stdout=self.stream,
            stderr=subprocess.STDOUT,
            env=env_for(settings),
        )

    def text(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.stream.close()


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[type[Worker]]:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        w = Worker(settings, tmp_path / f"worker{len(started)}.log", *args)
        started.append(w)
        return w

    yield start  # type: ignore[misc]
    for w in started:
        if w.process.poll() is None:
            w.process.kill()
            w.wait(10)


async def test_run_discovers_the_installed_plugin_and_handles_its_events(
    broker: Broker, settings: Settings, worker_process: type[Worker]
) -> None:
    greet_queue, flaky_queue = broker.track_installed("greet", "flaky")
    worker = worker_process("--handler", "greet", "--handler", "flaky")
    await wait_for(lambda: "handler flaky from eventworker-example" in worker.text(), 30)
    assert cli(settings, "publish", "demo.greet", '{"name": "Ada"}').returncode == 0
    assert cli(settings, "publish", "demo.flaky", "{}").returncode == 0
    await wait_for(lambda: "succeeded on attempt 3" in worker.text(), 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    log = worker.text()
    assert "hello, Ada" in log
    assert "flaky attempt 1/4" in log and "flaky attempt 2/4" in log
    assert "drained" in log
    assert "guest:guest" not in log
    assert await broker.count(greet_queue) == 0 and await broker.count(flaky_queue) == 0


async def test_sigterm_lets_a_running_handler_finish_then_exits_0(
    broker: Broker, settings: Settings, worker_process: type[Worker]
) -> None:
    [queue] = broker.track_installed("slow")
    worker = worker_process("--handler", "slow", "--grace", "10")
    await wait_for(lambda: "handler slow from" in worker.text(), 30)
    assert cli(settings, "publish", "demo.slow", '{"seconds": 2}').returncode == 0
    await wait_for(lambda: "working for 2.0s" in worker.text(), 30)
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert time.monotonic() - sent < 8
    log = worker.text()
    assert "done after 2.0s" in log
    assert "1 finished, 0 unfinished" in log
    assert await broker.count(queue) == 0
    assert await broker.count(f"{queue}.dead") == 0


async def test_a_second_signal_stops_at_once_and_the_message_goes_back(
    broker: Broker, settings: Settings, worker_process: type[Worker]
) -> None:
    [queue] = broker.track_installed("slow")
    worker = worker_process("--handler", "slow", "--grace", "60")
    await wait_for(lambda: "handler slow from" in worker.text(), 30)
    assert cli(settings, "publish", "demo.slow", '{"seconds": 600}').returncode == 0
    await wait_for(lambda: "working for 600.0s" in worker.text(), 30)
    worker.signal(signal.SIGTERM)
    await wait_for(lambda: "draining" in worker.text(), 10)
    sent = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 3
    await wait_for(lambda: True)
    [back] = await broker.take_all(queue, expect=1)
    assert back.redelivered
    assert await broker.count(f"{queue}.dead") == 0


def test_plugins_lists_enabled_available_and_ignored_ones(
    settings: Settings, tmp_path: Path
) -> None:
    # A stray plugin's metadata in the working directory: listed as ignored, never imported.
    dist = tmp_path / "evil-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[eventworker.handlers]\npwn = evilmod:handler\n")
    (tmp_path / "evilmod.py").write_text("open('SENTINEL', 'w').close()\n")
    result = subprocess.run(
        [sys.executable, "-m", "eventworker", "plugins", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_for(settings, EVENTWORKER_PLUGINS="audit,pwn"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status = {row["plugin"]: row["status"] for row in json.loads(result.stdout)}
    assert status["audit"] == "enabled"
    assert status["demo"] == "available, not enabled"
    assert status["pwn"].startswith("ignored (untrusted location")
    assert not (tmp_path / "SENTINEL").exists()


async def test_log_lines_stay_single_lines_whatever_the_producer_sends(
    broker: Broker, settings: Settings, worker_process: type[Worker]
) -> None:
    broker.track_installed("broken")
    worker = worker_process("--handler", "broken")
    await wait_for(lambda: "handler broken from" in worker.text(), 30)
    forged = "evil\nFORGED 2026-01-01 ERROR fake line\x1b[31m{secret}"
    await broker.publish("demo.broken", b"{}", message_id=forged)
    await wait_for(lambda: "dead-lettered" in worker.text(), 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    lines = worker.text().splitlines()
    assert not any(line.startswith("FORGED") for line in lines)
    assert "\x1b[31m" not in worker.text()
    assert any("evil\\x0aFORGED" in line and "{secret}" in line for line in lines)


def test_a_package_in_the_working_directory_does_not_shadow_an_installed_plugin(
    settings: Settings, tmp_path: Path
) -> None:
    # `python -m` puts the working directory first on sys.path: a package there named like the
    # example plugin's module would be imported in its place.
    shadow = tmp_path / "eventworker_example"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "from pathlib import Path\n"
        "Path('SHADOW-IMPORTED').write_text('imported')\n"
        "print('SHADOW-IMPORTED')\n"
        "raise SystemExit('the shadowing package was imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "eventworker", "handlers", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_for(settings, EVENTWORKER_PLUGINS="demo,audit"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "SHADOW-IMPORTED" not in result.stdout + result.stderr
    assert not (tmp_path / "SHADOW-IMPORTED").exists()
    rows = json.loads(result.stdout)
    assert {row["plugin"] for row in rows} == {"demo", "audit"}
    assert all(row["distribution"].startswith("eventworker-example ") for row in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "5x"], "--delay '5x': give a whole number and a unit"),
        (["--delay", "-5s"], "--delay '-5s'"),
        (["--delay", "1.5h"], "--delay '1.5h'"),
        (["--delay", "90s", "--at", "2027-01-01T09:00:00Z"], "give --delay or --at, not both"),
        (["--at", "tomorrow"], "--at 'tomorrow': not an ISO 8601 time"),
        (["--at", "2027-01-01T09:00:00"], "--at '2027-01-01T09:00:00': give the time zone"),
        (["--delay", "400000d"], "--delay: a delay of 34560000000 s is longer than 25 levels"),
    ],
    ids=["unit", "negative", "fraction", "both", "at-text", "at-naive", "too-long"],
)
def test_publish_refuses_a_bad_delay_before_connecting(
    settings: Settings, args: list[str], message: str
) -> None:
    result = cli(
        settings,
        "publish",
        "demo.greet",
        "{}",
        *args,
        EVENTWORKER_URL=f"amqp://guest:{CANARY}@127.0.0.1:1/",
        EVENTWORKER_DELAY_LEVELS="25",
    )
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr
    assert f"error: {message}" in result.stderr


def test_publish_with_a_delay_needs_delay_levels(settings: Settings) -> None:
    result = cli(
        settings, "publish", "demo.greet", "{}", "--delay", "90s",
        EVENTWORKER_URL=f"amqp://guest:{CANARY}@127.0.0.1:1/",
    )  # fmt: skip
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr
    assert "delayed publishing is off: set delay_levels" in result.stderr


async def orders_queue_with_delay_levels(broker: Broker, settings: Settings) -> str:
    """The work queue of a handler of ``orders.#``, declared with 25 delay levels."""
    from eventworker import Context, Event, handler

    @handler("orders.#", name="held")
    async def held(event: Event[object], ctx: Context) -> None:
        pass

    worker = await broker.declare(held, settings=settings.model_copy(update={"delay_levels": 25}))
    return worker.routes[0].queue


async def test_publish_with_a_delay_is_held_by_the_broker(
    broker: Broker, settings: Settings
) -> None:
    queue = await orders_queue_with_delay_levels(broker, settings)
    started = time.monotonic()
    result = cli(
        settings, "publish", "orders.created", "{}", "--id", "late-1", "--delay", "2s",
        EVENTWORKER_DELAY_LEVELS="25",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 confirmed" in result.stdout
    assert await broker.count(queue) == 0
    assert await broker.count(f"{settings.exchange}.delay.1") == 1  # 2 s = 10b: level 1
    [message] = await broker.take_all(queue, expect=1, timeout=10)
    assert time.monotonic() - started >= 2 - 0.1
    assert message.message_id == "late-1" and message.type == "orders.created"
    assert message.routing_key == "0." * 23 + "1.0.orders.created"


async def test_publish_at_a_time_past_is_delivered_at_once(
    broker: Broker, settings: Settings
) -> None:
    queue = await orders_queue_with_delay_levels(broker, settings)
    result = cli(
        settings, "publish", "orders.created", "{}", "--id", "past-1",
        "--at", "2020-01-01T09:00:00Z", EVENTWORKER_DELAY_LEVELS="25",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # No hop through the levels: in the work queue as soon as the publish was confirmed.
    [message] = await broker.take_all(queue, expect=1, timeout=2)
    assert message.message_id == "past-1" and message.routing_key == "orders.created"
    assert "x-death" not in (message.headers or {})
