"""AMQP clients of other ecosystems, run by the interop tests: Node's amqplib (a script under
tests/interop/node/) and rabbitmq-c's command-line tools (Debian's ``amqp-tools``). kombu is a
Python package of the test extra and is imported by the tests themselves.

scripts/test.sh installs each where it can; a test whose client is missing skips, saying what
is missing and how to get it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parents[1] / "interop" / "node"


def why_no_amqplib() -> str | None:
    """None when Node and the pinned amqplib are here; else why not, and the fix."""
    if shutil.which("node") is None:
        return "needs Node.js (apt-get install nodejs npm) for the amqplib interop tests"
    if not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        return f"needs amqplib: npm install --prefix {NODE_DIR} (scripts/test.sh does it)"
    return None


def why_no_amqp_tools() -> str | None:
    """None when rabbitmq-c's amqp-publish and amqp-consume are here; else why not."""
    if shutil.which("amqp-publish") is None or shutil.which("amqp-consume") is None:
        return "needs rabbitmq-c's amqp-publish/amqp-consume (apt-get install amqp-tools)"
    return None


async def run(*argv: str | bytes, stdin: bytes | None = None, timeout: float = 30) -> bytes:
    """Run a client; its standard output. Raises AssertionError (with its stderr) on failure."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode == 0, (
        f"{argv[0]!r} exited {process.returncode}: {err.decode()[-2000:]}"
    )
    return out


async def amqplib(command: dict[str, Any], timeout: float = 30) -> Any:
    """One command of tests/interop/node/client.js: ``publish`` or ``get`` (see the script)."""
    out = await run("node", str(NODE_DIR / "client.js"), json.dumps(command), timeout=timeout)
    return json.loads(out)


def node_bytes(value: Any) -> Any:
    """What client.js printed, with its ``{"$bytes": base64}`` turned back into bytes."""
    if isinstance(value, list):
        return [node_bytes(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        return {k: node_bytes(v) for k, v in value.items()}
    return value
