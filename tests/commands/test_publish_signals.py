"""``eventworker publish --file`` stopped by SIGINT or SIGTERM: a real process against the real
broker, the signal landing while the file is being sent."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import pytest

from eventworker.commands.sending import STOP_WAIT
from eventworker.errors import ExitCode
from eventworker.settings import Settings
from tests.support.broker import Broker
from tests.support.cli import EVENTWORKER, bound_queue, cli, env_for

#: Far more events than are sent before the signal lands: it always lands mid-run.
LINES = 200_000
SUMMARY = re.compile(
    r"(\d+) of (\d+) event\(s\) confirmed .*, (\d+) not confirmed \((\d+) never sent\)"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
async def test_a_signal_mid_file_stops_sending_and_accounts_for_every_event(
    broker: Broker, settings: Settings, tmp_path: Path, sig: signal.Signals
) -> None:
    queue = await bound_queue(broker, "bulk.#")
    events, failed_out = tmp_path / "events.jsonl", tmp_path / "failed.jsonl"
    events.write_text("".join(f'{{"n": {n}}}\n' for n in range(LINES)))
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "publish",
        "bulk.load",
        "--file",
        str(events),
        "--failed-out",
        str(failed_out),
        env=env_for(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        while await broker.count(queue) == 0:  # the first events arrived: it is sending
            assert process.returncode is None, "publish ended before any event arrived"
            await asyncio.sleep(0.02)
        process.send_signal(sig)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    summary = SUMMARY.search(stdout)
    assert summary, stdout
    confirmed, total, unconfirmed, never_sent = map(int, summary.groups())
    assert total == LINES and confirmed + unconfirmed == LINES
    assert confirmed > 0 and never_sent > 0, "the signal did not land mid-run"

    failed = [json.loads(line) for line in failed_out.read_text().splitlines()]
    failed_ids = {row["id"] for row in failed}
    assert len(failed) == len(failed_ids) == unconfirmed
    assert sum(row["status"] == "not_sent" for row in failed) == never_sent
    arrived = {m.message_id for m in await broker.take_all(queue, expect=confirmed)}
    # Every confirmed event arrived, and no event reported unconfirmed did: with the ids all
    # distinct, the two sets together are the whole file.
    assert len(arrived) == confirmed
    assert not arrived & failed_ids


def test_the_help_states_how_long_a_signal_waits_for_confirms(settings: Settings) -> None:
    result = cli(settings, "publish", "--help")
    assert result.returncode == 0
    assert f"waits up to {STOP_WAIT:g} seconds" in " ".join(result.stdout.split())
