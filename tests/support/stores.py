"""Test helpers for the inbox stores: where the real PostgreSQL and Redis are, and cleanup.

PostgreSQL is the one at $EVENTWORKER_TEST_POSTGRES_URL, else postgres@127.0.0.1:5432/test
(password "postgres", which a trust-auth server ignores and scripts/bootstrap.sh sets on a
PostgreSQL it installs);
Redis the one at $EVENTWORKER_TEST_REDIS_URL, else 127.0.0.1:6379/0 (scripts/bootstrap.sh
starts both when they are not running). When one cannot be reached, the tests of that store
are skipped with the reason. Every test gets its own table name / key prefix and drops it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eventworker.settings import InboxSettings

T = TypeVar("T")

POSTGRES_URL = os.environ.get(
    "EVENTWORKER_TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EVENTWORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The stores that outlive a process (shared by worker processes), and all of them.
SHARED_STORES = ("sqlite", "postgres", "redis")
ALL_STORES = ("memory", *SHARED_STORES)


def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def store_url(kind: str, tmp_path: Path) -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'inbox.db'}",
        "postgres": POSTGRES_URL,
        "redis": REDIS_URL,
    }[kind]


async def _postgres_problem() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except Exception as exc:
        return f"no PostgreSQL at {POSTGRES_URL}: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _redis_problem() -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as exc:
        return f"no Redis at {REDIS_URL}: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end in a thread of its own, leaving this thread's event loop alone."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coro)))
    thread.start()
    thread.join()
    if not result:
        raise RuntimeError("the coroutine failed; see the thread's traceback above")
    return result[0]


_unavailable: dict[str, str | None] = {}


def unavailable(kind: str) -> str | None:
    """Why the store ``kind`` cannot be tested here, or None (checked once per session)."""
    if kind not in _unavailable:
        check = {"postgres": _postgres_problem, "redis": _redis_problem}.get(kind)
        _unavailable[kind] = run_sync(check()) if check else None
    return _unavailable[kind]


async def drop(settings: InboxSettings) -> None:
    """Remove the test's table (PostgreSQL) or keys (Redis); SQLite files live in tmp_path."""
    url = settings.url.get_secret_value()
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {settings.name}")
        finally:
            await conn.close()
    elif url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{settings.name}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is missing here, saying why; in CI (``CI=true``) fail it
    instead, so that a run that could not test a store never passes as if it had."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)
