"""H: security (reliability guide §7 H1-H4): credentials never logged, TLS verified by
default, plugins only from installed distributions, CLI input refused before connecting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventworker.errors import ExitCode
from tests.faults.plugin import Spec
from tests.faults.processes import settings_env
from tests.faults.rig import Rig
from tests.support.private_node import PrivateNode

EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))
CANARY = "CANARY-p4ss-7d2e"


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, *, program: tuple[str, ...] = (EVENTWORKER,)
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*program, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def canary_url(node: PrivateNode, *, user: str = "ew-canary", port: int | None = None) -> str:
    return f"amqp://{user}:{CANARY}@127.0.0.1:{port or node.port}/"


@contextlib.contextmanager
def canary_user(node: PrivateNode) -> Iterator[str]:
    node.ctl.add_user("ew-canary", CANARY)
    try:
        yield "ew-canary"
    finally:
        node.ctl.delete_user("ew-canary")


async def test_h1_the_password_shows_nowhere_whatever_fails(
    node_rig: Rig, node: PrivateNode
) -> None:
    rig = node_rig.with_settings(log_level="DEBUG")
    with canary_user(node):
        rig.settings = rig.settings.model_copy(
            update={"url": type(rig.settings.url)(canary_url(node))}
        )
        env = settings_env(rig.settings)
        outputs: list[str] = []

        def attempt(url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            done = run_cli(list(args), {**env, "EVENTWORKER_URL": url, **extra}, rig.folder)
            outputs.append(done.stdout + done.stderr)
            return done

        refused = attempt(canary_url(node, port=1), "publish", "h1.event", "{}")
        wrong = attempt(canary_url(node, user="guest"), "publish", "h1.event", "{}")
        malformed = attempt(f"amqp://u:{CANARY}@[::1", "publish", "h1.event", "{}")
        invalid = attempt(
            canary_url(node), "publish", "h1.event", "{}", EVENTWORKER_CONCURRENCY="lots"
        )
        listing = [attempt(canary_url(node), command) for command in ("handlers", "plugins")]

        worker = rig.started([Spec("h1", ("h1.event",), max_attempts=1)])
        cmdline = await asyncio.to_thread(Path(f"/proc/{worker.pid}/cmdline").read_bytes)
        [event_id] = await rig.publish("h1.event", [{"n": 1, "fault": "raise", "error": "x"}])
        await rig.wait_dead_lettered("h1", 1)
        await asyncio.sleep(5)  # DEBUG logging for a while
        assert worker.stop() == 0
        await rig.finish(workers=[worker])

    assert refused.returncode == ExitCode.BROKER_UNREACHABLE
    assert wrong.returncode == ExitCode.BROKER_AUTH, "auth and connect failures look alike"
    assert malformed.returncode == ExitCode.BROKER_UNREACHABLE
    assert invalid.returncode == ExitCode.CONFIG
    assert all(done.returncode == 0 for done in listing)
    assert f"amqp://ew-canary:***@127.0.0.1:{node.port}/" in worker.log()
    assert CANARY.encode() not in cmdline
    dead_lettered = rig.ledger.dead_lettered_rows()
    assert [row["id"] for row in dead_lettered] == [event_id]
    for where, text in [
        ("CLI output", "".join(outputs)),
        ("worker log", worker.all_logs()),
        ("dead-lettered headers", str(dead_lettered)),
    ]:
        assert CANARY not in text, f"the password shows in the {where}"


def tls_env(rig: Rig, url: str, **extra: str) -> dict[str, str]:
    return {**settings_env(rig.settings), "EVENTWORKER_URL": url, **extra}


async def test_h2_tls_verifies_the_chain_and_the_host_name_unless_told_not_to(
    node_rig: Rig, node: PrivateNode
) -> None:
    if node.tls_port is None:
        pytest.skip("needs openssl to make certificates for the TLS listener")
    rig = node_rig
    await rig.declare([Spec("h2", ("h2.event",))])
    by_name = f"amqps://guest:guest@localhost:{node.tls_port}/"
    by_ip = f"amqps://guest:guest@127.0.0.1:{node.tls_port}/"
    ca = {"EVENTWORKER_TLS__CA_FILE": str(node.ca_file)}
    insecure = {"EVENTWORKER_TLS__INSECURE": "true"}

    def publish(url: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(["publish", "h2.event", "{}"], tls_env(rig, url, **extra), rig.folder)

    verified, no_ca, wrong_host, unverified = await asyncio.gather(
        asyncio.to_thread(publish, by_name, **ca),
        asyncio.to_thread(publish, by_name),
        asyncio.to_thread(publish, by_ip, **ca),
        asyncio.to_thread(publish, by_name, **insecure),
    )
    started = time.monotonic()
    plain = await asyncio.to_thread(publish, f"amqp://guest:guest@127.0.0.1:{node.tls_port}/")
    plain_took = time.monotonic() - started

    assert verified.returncode == 0, verified.stderr
    assert no_ca.returncode == ExitCode.BROKER_UNREACHABLE
    assert "certificate verify failed" in no_ca.stderr
    assert wrong_host.returncode == ExitCode.BROKER_UNREACHABLE
    assert "mismatch" in wrong_host.stderr or "match" in wrong_host.stderr, wrong_host.stderr
    assert unverified.returncode == 0, unverified.stderr
    assert plain.returncode == ExitCode.BROKER_UNREACHABLE and plain_took < 10
    assert str(node.tls_port) in plain.stderr

    # (d) again as a worker: it connects, and says loudly that nothing is verified.
    settings = rig.settings.model_copy(update={"url": type(rig.settings.url)(by_name)})
    worker = rig.worker([Spec("h2", ("h2.event",))], settings=settings, env=insecure).start()
    worker.wait_started()
    assert worker.stop() == 0
    warnings = [line for line in worker.log().splitlines() if "TLS verification is OFF" in line]
    assert warnings and " WARNING " in warnings[0]

    # (f) a client that speaks at most TLS 1.1 gets no session from a TLS 1.2+ broker.
    context = ssl.create_default_context(cafile=str(node.ca_file))
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", node.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


def untrusted_directory(folder: Path, sentinel: Path) -> Path:
    """A working directory holding a stray ``*.dist-info`` that registers a "plugin" whose
    import would create ``sentinel``."""
    cwd = folder / "untrusted"
    info = cwd / "evil-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[eventworker.handlers]\npwn = evilmod:handler\n")
    (cwd / "evilmod.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('imported')\n"
    )
    return cwd


async def test_h3_only_installed_allowlisted_plugins_run(shared_rig: Rig) -> None:
    rig = shared_rig
    sentinel = rig.folder / "evil-imported"
    cwd = untrusted_directory(rig.folder, sentinel)
    env = {**settings_env(rig.settings), "EVENTWORKER_PLUGINS": "demo"}
    env.pop("PYTHONPATH")
    # python -m puts the working directory on sys.path, so the stray metadata is seen there
    # (and shown as ignored); the console script does not even see it.
    listing = run_cli(["plugins"], env, cwd, program=(sys.executable, "-m", "eventworker"))
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert "ignored (untrusted location" in rows["pwn"]
    assert "available, not enabled" in rows["audit"]
    assert rows["demo"].endswith("enabled") and "eventworker-example" in rows["demo"]
    script = run_cli(["plugins"], env, cwd)
    assert "pwn" not in script.stdout or "ignored" in script.stdout

    for command in ([EVENTWORKER], [sys.executable, "-m", "eventworker"]):
        text = await asyncio.to_thread(run_until_started, [*command, "run"], env, cwd)
        assert "from eventworker-example 0.1.0 (plugin demo)" in text
        assert "plugin audit" not in text and "pwn" not in text
    assert not sentinel.exists(), "a plugin from the working directory was imported"

    bound = {
        b["destination_name"]
        for b in await asyncio.to_thread(rig.ctl.bindings)
        if b["source_name"] == rig.settings.exchange
    }
    rig.other_queues |= bound | {f"{q}.dead" for q in bound}
    assert bound and all(q.startswith(rig.prefix) for q in bound)
    assert f"{rig.prefix}audit_orders" not in bound


def run_until_started(command: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a worker command until it consumes, stop it with SIGTERM; its log."""
    log = cwd / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "worker connected" not in log.read_text():
            assert worker.poll() is None, f"{command} exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{command} did not start"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    return log.read_text()


class ConnectionCounter:
    """A TCP port that counts who connects to it: a broker URL for checks that must refuse
    before connecting."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.accepted += 1
                conn.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def counter() -> Iterator[ConnectionCounter]:
    listening = ConnectionCounter()
    yield listening
    listening.close()


BIG = 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["k" * 256, "{}"], ExitCode.INVALID_INPUT, "longer than 255 bytes"),
        (["", "{}"], ExitCode.INVALID_INPUT, "routing key is empty"),
        ([b"bad\xff.key", b"{}"], ExitCode.INVALID_INPUT, "not valid UTF-8"),
        (["orders.#", "{}"], ExitCode.INVALID_INPUT, "binding wildcards"),
        (["orders.*", "{}"], ExitCode.INVALID_INPUT, "binding wildcards"),
        (["k", "{}", "--header", "CC=x"], ExitCode.INVALID_INPUT, "'CC' is reserved"),
        (["k", "{}", "--header", "BCC=x"], ExitCode.INVALID_INPUT, "'BCC' is reserved"),
        (["k", "{}", "--header", "x-death=1"], ExitCode.INVALID_INPUT, "'x-death' is reserved"),
        (["k", "{}", "--user-id", "someoneelse"], ExitCode.USAGE, "No such option"),
        (["k", "--file", "bad.jsonl"], ExitCode.INVALID_INPUT, "line 2: invalid JSON"),
        (["k", "--file", "big.jsonl"], ExitCode.INVALID_INPUT, "exceeds max_body_bytes"),
        (["k", "{}", "--id", "i" * 300], ExitCode.INVALID_INPUT, "--id must be 1 to 255"),
    ],
    ids=[
        "key-256",
        "key-empty",
        "key-utf8",
        "key-hash",
        "key-star",
        "cc",
        "bcc",
        "x-death",
        "user-id",
        "bad-json",
        "too-big",
        "id-300",
    ],
)
def test_h4_publish_refuses_bad_input_before_connecting(
    counter: ConnectionCounter, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"n": 1}\n{"n": \n')
    (tmp_path / "big.jsonl").write_text('{"pad": "' + "x" * BIG + '"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env["EVENTWORKER_URL"] = f"amqp://guest:guest@127.0.0.1:{counter.port}/"
    done = subprocess.run(
        [
            EVENTWORKER.encode(),
            b"publish",
            *(a if isinstance(a, bytes) else a.encode() for a in args),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == code, stderr
    assert message in stderr
    assert counter.accepted == 0, "the CLI connected before refusing"


async def test_h4_publish_to_a_missing_exchange_is_a_clear_error_not_a_hang(
    shared_rig: Rig,
) -> None:
    rig = shared_rig
    env = {**settings_env(rig.settings), "EVENTWORKER_EXCHANGE": f"{rig.prefix}missing"}
    started = time.monotonic()
    done = await asyncio.to_thread(run_cli, ["publish", "k", "{}"], env, rig.folder)
    assert done.returncode == ExitCode.BROKER_REFUSED
    assert "does not exist" in done.stderr and f"{rig.prefix}missing" in done.stderr
    assert time.monotonic() - started < 10
