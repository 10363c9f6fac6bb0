"""docs/getting-started.md, run: every command of the page in order, in a fresh virtual
environment, against the real broker on this test's own exchange and queue prefix, and the
output the page shows checked against what came back.

The page's blocks, in order: ``console`` (``$ command`` lines, each followed by its expected
output; after ``eventworker run``, the worker's expected log), ``text`` (lines the running
worker logs next), ``python`` after "Replace `FILE` with:" (the included file is written
there), ``diff`` (applied to the file it names). In expected lines ``...`` stands for anything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventworker.settings import Settings
from eventworker.worker.lifecycle import Worker
from tests.support import venvs
from tests.support.broker import Broker, registrations

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started.md"
#: Commands of the page that only read, so may run again until they show what the page shows.
READ_ONLY = ("eventworker status", "eventworker dlq show", "curl ")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass
class Step:
    kind: str  # "run", "log", "write", "patch"
    command: str = ""
    expected: list[str] = field(default_factory=list)
    path: str = ""
    text: str = ""


def steps(page: str) -> Iterator[Step]:
    for block in FENCE.finditer(page):
        kind, body = block.group(1), block.group(2)
        before = page[: block.start()].rstrip().splitlines()[-1]
        if kind == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, *output = chunk.rstrip("\n").split("\n")
                yield Step("run", command=command, expected=output)
        elif kind == "text":
            yield Step("log", expected=body.splitlines())
        elif kind == "python":
            target = re.search(r"`([^`]+)` with:$", before)
            source = re.fullmatch(r'--8<-- "([^"]+)"\n', body)
            assert target and source, f"a Python block not written to a file: {before}"
            yield Step("write", path=target.group(1), text=(ROOT / source.group(1)).read_text())
        elif kind == "diff":
            target = re.search(r"^\+\+\+ b/(.+)$", body, re.M)
            assert target, body
            yield Step("patch", path=target.group(1), text=body)
        else:
            raise AssertionError(f"a ```{kind} block this test does not know how to run")


def found(expected: list[str], actual: str) -> bool:
    """Every expected line, in order, matches a line of ``actual``: from its start (unless it
    starts with ``...``), its parts between ``...`` appear in that line in order. Runs of
    spaces count as one: columns are as wide as the names in them."""
    lines, at = [" ".join(line.split()) for line in actual.splitlines()], 0
    for line in expected:
        parts = [" ".join(p.split()) for p in line.split("...")]
        if not any(parts):
            continue
        pattern = re.compile(
            ("" if line.startswith("...") else "^") + ".*".join(re.escape(p) for p in parts if p)
        )
        while at < len(lines) and not pattern.search(lines[at]):
            at += 1
        if at == len(lines):
            return False
        at += 1
    return True


def patch(path: Path, diff: str) -> None:
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    old = "".join(line[1:] + "\n" for line in body if line[:1] in (" ", "-"))
    new = "".join(line[1:] + "\n" for line in body if line[:1] in (" ", "+"))
    text = path.read_text()
    assert text.count(old) == 1, f"the diff does not apply to {path}: {old!r}"
    path.write_text(text.replace(old, new))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PageWorker:
    """``eventworker run`` in the background, as in the page's first terminal."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            shlex.split(command),
            env=env,
            cwd=cwd,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the worker stopped:\n{self.text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the worker was not ready within {timeout}s:\n{self.text()}")

    def wait_log(self, expected: list[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not found(expected, self.text()):
            assert time.monotonic() < deadline, (
                f"the worker never logged {expected}:\n{self.text()}"
            )
            time.sleep(0.2)

    def stop(self) -> None:
        """Ctrl-C: the worker drains and exits 0."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(60) == 0, self.text()


def walk(page: str, env: dict[str, str], work: Path, own: dict[str, str], port: int) -> None:
    """Do what the page says, step by step, in ``work``; the page's names replaced by ``own``."""

    def ours(text: str) -> str:
        for page_value, value in own.items():
            text = text.replace(page_value, value)
        return text

    worker: PageWorker | None = None
    runs = 0
    try:
        for step in steps(page):
            expected = [ours(line) for line in step.expected]
            if step.kind == "write":
                (work / step.path).write_text(step.text)
            elif step.kind == "patch":
                patch(work / step.path, step.text)
            elif step.kind == "log":
                assert worker is not None, "the page shows a worker's log before it runs one"
                worker.wait_log(expected)
            elif step.command.startswith("export "):
                name, _, value = step.command.removeprefix("export ").partition("=")
                assert name in (
                    "EVENTWORKER_URL",
                    "EVENTWORKER_EXCHANGE",
                    "EVENTWORKER_QUEUE_PREFIX",
                )
                env[name] = ours(value)
            elif step.command.startswith("eventworker run"):
                if worker is not None:
                    worker.stop()
                runs += 1
                worker = PageWorker(
                    ours(step.command), env, work, work.parent / f"worker-{runs}.log"
                )
                worker.wait_ready(port)
                worker.wait_log(expected)
            else:
                deadline = time.monotonic() + 15
                while True:
                    done = subprocess.run(
                        ["bash", "-c", ours(step.command)],
                        env=env,
                        cwd=work,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    output = done.stdout + done.stderr
                    shown = done.returncode == 0 and found(expected, output)
                    # A command that only reads may run before the worker's ack it shows (the
                    # log line comes from inside the handler): read again, as a person would.
                    if shown or not step.command.startswith(READ_ONLY):
                        break
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                assert done.returncode == 0, f"$ {step.command}\n{output}"
                assert found(expected, output), f"$ {step.command}\n{output}\nexpected: {expected}"
        assert runs == 2, "the page runs a worker, then runs it again after the fix"
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.stop()


@pytest.mark.timeout(240)
async def test_every_command_of_the_getting_started_page_runs_as_shown(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the page reads /metrics with curl, which is not installed")
    port = free_port()
    # The page's names, as this test's own: its exchange, queue prefix, broker and a free port.
    own = {
        "amqp://guest:guest@localhost:5672/": settings.url.get_secret_value(),
        "acme.dev.": settings.queue_prefix,
        "acme.dev": settings.exchange,
        "9464": str(port),
    }
    spec = importlib.util.spec_from_file_location(
        "getting_started_handlers", ROOT / "docs" / "examples" / "acme_orders_handlers.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    broker.track(Worker(registrations(module.confirm_order), settings))  # deleted after

    work = tmp_path / "work"
    work.mkdir()
    # This test's environment holds the repository's example plugin too; an author's does not.
    bin_dir = await asyncio.to_thread(venvs.create, tmp_path / "venv")
    env = venvs.env(bin_dir, EVENTWORKER_PLUGINS="acme_orders")
    await asyncio.to_thread(walk, PAGE.read_text(), env, work, own, port)
