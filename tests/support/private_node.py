"""A private RabbitMQ node for tests that stop, kill or reconfigure a broker (the fault suite;
the management API's view of bindings).

It runs the installed ``rabbitmq-server`` under its own node name, ports, database, logs,
config file and plugin list (empty unless asked for), all in a temporary folder, so nothing a
test does to it can touch the shared broker on 5672. It shares the Erlang cookie of the system
install, which is what lets ``rabbitmqctl -n <node>`` control it. ``rabbitmq-server`` as root
runs the node as the ``rabbitmq`` user, so the folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control import Control, ControlError, have_rabbitmqctl

#: How long a node may take to boot (usually 5-10 s here; more on a loaded machine).
BOOT_TIMEOUT = 90.0
#: RabbitMQ's default memory watermark, restored after a test raised an alarm.
DEFAULT_WATERMARK = 0.4


def why_no_private_node() -> str | None:
    """None when a private node can be started here; else the reason, for a skip."""
    if shutil.which("rabbitmq-server") is None or not have_rabbitmqctl():
        return "needs rabbitmq-server and rabbitmqctl to start a private broker node"
    if os.geteuid() != 0:
        return "needs root to start a private broker node as the rabbitmq user"
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return "needs the rabbitmq system user of the rabbitmq-server package"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificates(folder: Path) -> None:
    """A CA (``ca.pem``) and a server certificate for ``localhost`` only (no IP address),
    signed by it (``server.pem``, ``server.key``)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=eventworker test CA",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )


class PrivateNode:
    """One ``rabbitmq-server`` of a test session; :meth:`heal` undoes what a test changed."""

    def __init__(self, name: str, *, tls: bool = False, plugins: tuple[str, ...] = ()) -> None:
        self.name = f"{name}@localhost"
        self.folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.port = free_port()
        self.dist_port = free_port()
        #: The TLS listener's port (TLS 1.2+, certificate for ``localhost``), when asked for
        #: and openssl is there to make the certificates.
        self.tls_port: int | None = free_port() if tls and shutil.which("openssl") else None
        self.plugins = plugins
        #: The management API's port, when the management plugin is asked for.
        self.management_port: int | None = free_port() if "rabbitmq_management" in plugins else None
        self.ctl = Control(self.name, private=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.app_stopped = False
        self.watermark_changed = False
        #: Killed (``kill -9``) and not started again yet.
        self.killed = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    def _environment(self) -> dict[str, str]:
        f = self.folder
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(f / "mnesia"),
            RABBITMQ_LOG_BASE=str(f / "log"),
            RABBITMQ_CONFIG_FILE=str(f / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(f / "enabled_plugins"),
            # Our own (empty) env file: the system one names the shared node.
            RABBITMQ_CONF_ENV_FILE=str(f / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(f / "node.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self) -> None:
        f = self.folder
        (f / "mnesia").mkdir(exist_ok=True)
        (f / "log").mkdir(exist_ok=True)
        (f / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (f / "rabbitmq-env.conf").write_text("")
        (f / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            f"{self._management_config()}"
            f"{self._tls_config()}"
        )
        user = pwd.getpwnam("rabbitmq")
        for path in [f, *f.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        self._launch()

    def _launch(self) -> None:
        """Start ``rabbitmq-server`` on the folder as it is (config, database, logs kept)."""
        f = self.folder
        with (f / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                ["rabbitmq-server"],
                env=self._environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group, so teardown can end all of it
            )
        self.wait_booted()

    def _management_config(self) -> str:
        if self.management_port is None:
            return ""
        return f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"

    @property
    def ca_file(self) -> Path:
        return self.folder / "tls" / "ca.pem"

    def _tls_config(self) -> str:
        if self.tls_port is None:
            return ""
        tls = self.folder / "tls"
        tls.mkdir()
        make_certificates(tls)
        return (
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {tls / 'ca.pem'}\n"
            f"ssl_options.certfile = {tls / 'server.pem'}\n"
            f"ssl_options.keyfile = {tls / 'server.key'}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            "ssl_options.versions.1 = tlsv1.2\n"
            "ssl_options.versions.2 = tlsv1.3\n"
        )

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        pid_file = self.folder / "node.pid"
        while not pid_file.exists():
            if self.process is not None and self.process.poll() is not None:
                raise ControlError(f"{self.name} exited at boot: {self.boot_output()}")
            if time.monotonic() > deadline:
                raise ControlError(f"{self.name} wrote no pid file: {self.boot_output()}")
            time.sleep(0.2)
        self.ctl.run("wait", str(pid_file), "--timeout", str(int(BOOT_TIMEOUT)))
        while self.management_port is not None and not _management_answers(self.management_port):
            if time.monotonic() > deadline:
                raise ControlError(f"{self.name}: no management API: {self.boot_output()}")
            time.sleep(0.5)

    def boot_output(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "server.out").read_text(errors="replace")[-3000:]
        return ""

    def os_pid(self) -> int:
        """The pid of the node's ``beam.smp``."""
        return int((self.folder / "node.pid").read_text().strip())

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")
        return ""

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_file.stat().st_size
        return 0

    # -- faults ----------------------------------------------------------------------------
    def kill9(self) -> None:
        """SIGKILL the node's ``beam.smp``: no shutdown of any kind, as on a power loss of
        the process. Its database folder stays; :meth:`restart` boots on it."""
        pid = self.os_pid()
        self.killed = True
        os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            # The launcher script waits for beam and exits with it.
            self.process.wait(30)
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                raise ControlError(f"{self.name}: beam (pid {pid}) outlived SIGKILL")
            time.sleep(0.05)
        # A stale pid file would let wait_booted return before the new node is up.
        (self.folder / "node.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        """Boot the node again after :meth:`kill9`, on the same database: durable queues and
        the persistent messages they held come back (quorum queues from their logs)."""
        self._launch()
        self.killed = False
        self.app_stopped = False

    def stop_app(self) -> None:
        self.app_stopped = True
        self.ctl.stop_app()

    def start_app(self) -> None:
        self.ctl.start_app()
        self.app_stopped = False

    def set_memory_watermark(self, fraction: float) -> None:
        self.watermark_changed = True
        self.ctl.set_memory_watermark(fraction)

    def heal(self) -> None:
        """Undo what a test did: node and app running, default watermark, no policies."""
        if self.killed:
            self.restart()
        if self.app_stopped:
            self.start_app()
        if self.watermark_changed:
            self.ctl.set_memory_watermark(DEFAULT_WATERMARK)
            self.watermark_changed = False
        for policy in self.ctl.policies():
            self.ctl.clear_policy(policy["name"])

    def stop(self) -> None:
        with contextlib.suppress(ControlError, subprocess.TimeoutExpired):
            self.ctl.run("stop", timeout=30)
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(OSError):
            os.kill(self.os_pid(), signal.SIGKILL)  # in case the node outlived its launcher
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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
def private_node(*, plugins: tuple[str, ...] = ("rabbitmq_management",)) -> Iterator[PrivateNode]:
    """A node of one test with ``plugins``, stopped and deleted afterwards; skips, saying why,
    where none can be started."""
    reason = why_no_private_node()
    if reason:
        pytest.skip(reason)
    node = PrivateNode(f"ewtest_{uuid.uuid4().hex[:8]}", plugins=plugins)
    try:
        node.start()
        yield node
    finally:
        node.stop()
