"""Passwords in URLs never reach any output: error lines, JSON, log lines, metrics and health."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import subprocess
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from loguru import logger
from pydantic import SecretStr

from eventworker import Context, Event, handler
from eventworker.errors import EventworkerError, ExitCode
from eventworker.observability import logs
from eventworker.settings import Settings
from eventworker.worker.health import serving
from eventworker.worker.lifecycle import Worker
from eventworker.worker.metrics import Metrics
from tests.support.broker import registrations
from tests.support.cli import EVENTWORKER, env_for

#: Printable characters with every one a URL gives a meaning to, a space and a few non-ASCII.
ALPHABET = st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["é", "ß", "€", "\u00a0", "日"])
#: Characters that broke redaction or URL parsing once: at least one is in every password.
AWKWARD = st.sampled_from([" ", "@", ":", "%", ",", "/", "%20", "%40", "@h:1/", ",amqp"])


@st.composite
def passwords(draw: st.DrawFn) -> str:
    password = draw(st.text(ALPHABET, min_size=4, max_size=16))
    cut = draw(st.integers(0, len(password)))
    password = password[:cut] + draw(AWKWARD) + password[cut:] + draw(st.text(ALPHABET, max_size=4))
    # Distinct characters enough that the password cannot be a word the output holds anyway.
    assume(len(set(password)) >= 5 and len(password) >= 8)
    return password


def forms(password: str) -> set[str]:
    """Every form of ``password`` that must not be shown: as given, percent-decoded, encoded."""
    return {password, unquote(password), quote(password, safe=""), quote(unquote(password))}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@handler("secret.event", name="secret_holder")
async def secret_holder(event: Event[Any], ctx: Context) -> None:
    pass


async def _worker_outputs(settings: Settings) -> list[str]:
    """What a worker that cannot connect shows: its error, /metrics, /healthz and /readyz."""
    metrics = Metrics()
    worker = Worker(registrations(secret_holder), settings, observers=[metrics])
    metrics.watch(worker)
    shown = []
    async with serving(worker, metrics, host="127.0.0.1", port=0) as port:
        with pytest.raises(EventworkerError) as caught:
            await asyncio.wait_for(worker.run(), 30)
        shown.append(str(caught.value))
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/healthz", "/readyz"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    shown.append(await response.text())
    assert "eventworker_" in shown[1]
    return shown


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=passwords(), encoded=st.booleans())
def test_no_form_of_a_password_shows_in_any_output_of_a_failing_connection(
    settings: Settings, password: str, encoded: bool
) -> None:
    userinfo = f"guest:{quote(password, safe='') if encoded else password}"
    closed = f"amqp://{userinfo}@127.0.0.1:{closed_port()}/"
    wrong = f"amqp://{userinfo}@127.0.0.1:5672/"
    outputs: list[tuple[str, str]] = []
    # The commands as a user runs them: a list of URLs tries the closed port, then is refused
    # the login; the closed port alone is unreachable.
    for url, args in [
        (f"{closed},{wrong}", ["status", "--json"]),
        (f"{closed},{wrong}", ["publish", "secret.event", "{}"]),
        (closed, ["run", "--log-format", "json", "--log-level", "DEBUG"]),
    ]:
        done = subprocess.run(
            [EVENTWORKER, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_for(settings, EVENTWORKER_URL=url, EVENTWORKER_PLUGINS="demo"),
        )
        outputs.append((" ".join(args), done.stdout + done.stderr))
        assert done.returncode in (ExitCode.BROKER_UNREACHABLE, ExitCode.BROKER_AUTH), done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    # A worker in this process, its JSON log lines and its endpoints.
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure("DEBUG", format="json", stream=stream)
    try:
        for url in (closed, wrong):
            worker_settings = settings.model_copy(update={"url": SecretStr(url)})
            shown = asyncio.run(_worker_outputs(worker_settings))
            outputs += [("worker", text) for text in shown]
    finally:
        logger.remove()
        logger.configure(patcher=lambda record: None)
        logger.disable("eventworker")
        root.handlers[:], root.level = saved
    outputs.append(("log lines", stream.getvalue()))
    for where, text in outputs:
        for form in forms(password):
            assert form not in text, f"the password shows in the {where}: {text[:500]}"


# A bad port in a database URL: one error line and exit code 3, whatever the command


DATABASE_PASSWORD = "PW-9d1c SECRET"


@pytest.mark.parametrize(
    "args",
    [
        ["inbox", "stats", "--store", f"postgresql://u:{DATABASE_PASSWORD}@127.0.0.1:xx/test"],
        ["inbox", "purge", "--store", f"redis://u:{DATABASE_PASSWORD}@127.0.0.1:xx/0"],
        ["inbox", "stats", "--json", "--store", f"redis://u:{DATABASE_PASSWORD}@127.0.0.1:0/0"],
        ["outbox", "init", "--dsn", f"postgresql://u:{DATABASE_PASSWORD}@127.0.0.1:xx/test"],
        ["outbox", "relay", "--dsn", f"postgresql://u:{DATABASE_PASSWORD}@127.0.0.1:99999/t"],
        ["outbox", "init", "--dsn", f"postgresql://u:{DATABASE_PASSWORD}@h1:5432,h2:x/t"],
        ["inbox", "stats", "--store", f"postgresql://u:{DATABASE_PASSWORD}@[::1/test"],
    ],
    ids=[
        "inbox-pg",
        "inbox-redis",
        "inbox-port-0",
        "outbox-init",
        "outbox-relay",
        "pg-hosts",
        "unclosed-bracket",
    ],
)
def test_a_bad_port_in_a_database_url_is_one_error_line_and_exit_3(
    settings: Settings, args: list[str]
) -> None:
    done = subprocess.run([EVENTWORKER, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "port" in done.stderr or "[ or ]" in done.stderr
    for form in forms(DATABASE_PASSWORD):
        assert form not in done.stdout + done.stderr


def test_a_bad_port_in_the_inbox_url_of_the_environment_stops_the_worker_with_exit_3(
    settings: Settings,
) -> None:
    url = f"redis://u:{quote(DATABASE_PASSWORD)}@127.0.0.1:65536/0"
    done = subprocess.run(
        [EVENTWORKER, "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(settings, EVENTWORKER_INBOX__URL=url),
    )
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    for form in forms(DATABASE_PASSWORD):
        assert form not in done.stdout + done.stderr
