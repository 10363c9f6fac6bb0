"""A private RabbitMQ node for tests that must reconfigure a broker (plugins, policies): own node
name, ports, data and log directories, config and enabled-plugins files. The shared broker is
never touched. Skips when rabbitmq-server is not installed."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BOOT_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Node:
    name: str
    amqp_port: int
    management_port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def ctl(self, *args: str) -> str:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args],
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        ).stdout


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _management_answers(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/overview",
        headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="},  # guest:guest
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def private_node(*, plugins: tuple[str, ...] = ("rabbitmq_management",)) -> Iterator[Node]:
    """Boot a node with ``plugins``; stop it and delete its data afterwards."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmq-server is not installed: no private node for this test")
    # Not under pytest's tmp_path: that is private to root, and the node runs as rabbitmq.
    base = Path(tempfile.mkdtemp(prefix="eventworker-node-"))
    base.chmod(0o755)
    try:
        with _booted(base, plugins) as node:
            yield node
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _booted(base: Path, plugins: tuple[str, ...]) -> Iterator[Node]:
    name = f"ewtest_{uuid.uuid4().hex[:8]}"
    amqp, dist, management = free_port(), free_port(), free_port()
    for sub in ("mnesia", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {amqp}\nmanagement.tcp.port = {management}\n"
        "loopback_users = none\n"
    )
    with contextlib.suppress(KeyError, PermissionError):
        # As root, rabbitmq-server drops to the rabbitmq user: it must own the directories.
        owner = pwd.getpwnam("rabbitmq")
        for path in [base, *base.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_PORT": str(amqp),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
    }
    node = Node(name, amqp, management, env)
    with (base / "server.log").open("w") as log:
        server = subprocess.Popen(
            ["rabbitmq-server"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not _answers(amqp) or (
            "rabbitmq_management" in plugins and not _management_answers(management)
        ):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = (base / "server.log").read_text()[-2000:]
                pytest.fail(f"private node did not start:\n{tail}")
            time.sleep(0.5)
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.ctl("stop")
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
