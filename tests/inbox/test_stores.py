"""The contract every inbox store meets, against the real SQLite, PostgreSQL and Redis, and
choosing a store by URL."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventworker.errors import ConfigError, InboxError
from eventworker.inbox.protocol import (
    Claimed,
    Completed,
    Conflict,
    HandlerStats,
    InboxStore,
    InProgress,
    Key,
)
from eventworker.inbox.stores import open_store
from eventworker.settings import InboxSettings

K = Key("bill_order", "event-1")


@pytest.fixture
async def store(inbox_settings: InboxSettings) -> AsyncIterator[InboxStore]:
    opened = open_store(inbox_settings)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def claim(
    store: InboxStore, key: Key = K, *, body: str = "h1", token: str = "t1", lease: float = 5.0
) -> object:
    return await store.claim(key, body_hash=body, owner=f"owner-{token}", token=token, lease=lease)


async def test_the_first_claim_wins_and_a_second_sees_it_in_progress(store: InboxStore) -> None:
    assert await claim(store) == Claimed()
    second = await claim(store, token="t2")
    assert isinstance(second, InProgress)
    assert second.owner == "owner-t1"
    assert 0 < second.expires_in <= 5.0


async def test_a_completed_event_answers_completed_and_counts_the_duplicate(
    store: InboxStore,
) -> None:
    await claim(store)
    assert await store.complete(K, token="t1")
    assert await claim(store, token="t2") == Completed()
    assert await claim(store, token="t3") == Completed()
    assert await store.stats() == [HandlerStats("bill_order", 1, 0, 0, 2)]


async def test_another_body_under_a_known_id_is_a_conflict_in_progress_or_done(
    store: InboxStore,
) -> None:
    await claim(store)
    assert await claim(store, body="h2", token="t2") == Conflict("h1")
    await store.complete(K, token="t1")
    assert await claim(store, body="h2", token="t3") == Conflict("h1")


async def test_a_claim_whose_lease_ran_out_is_taken_over_and_fences_the_old_token(
    store: InboxStore,
) -> None:
    await claim(store, lease=0.2)
    await asyncio.sleep(0.3)
    taken = await claim(store, token="t2")
    assert isinstance(taken, Claimed)
    assert not await store.complete(K, token="t1")
    assert not await store.renew(K, token="t1", lease=5)
    await store.release(K, token="t1")
    assert isinstance(await claim(store, token="t3"), InProgress), "the old token released it"
    assert await store.complete(K, token="t2")


async def test_renewing_keeps_a_claim_past_its_first_lease(store: InboxStore) -> None:
    await claim(store, lease=0.3)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await store.renew(K, token="t1", lease=0.3)
    assert isinstance(await claim(store, token="t2"), InProgress)


async def test_a_released_claim_can_be_claimed_again_at_once(store: InboxStore) -> None:
    await claim(store)
    await store.release(K, token="wrong")
    assert isinstance(await claim(store, token="t2"), InProgress)
    await store.release(K, token="t1")
    assert await claim(store, token="t2") == Claimed()


async def test_complete_is_idempotent_and_release_leaves_a_done_entry(store: InboxStore) -> None:
    await claim(store)
    assert await store.complete(K, token="t1")
    assert await store.complete(K, token="t1")
    await store.release(K, token="t1")
    assert await claim(store, token="t2") == Completed()


async def test_each_handler_has_its_own_entry_for_the_same_event(store: InboxStore) -> None:
    assert await claim(store, Key("a", "e")) == Claimed()
    assert await claim(store, Key("b", "e")) == Claimed()
    # Redis keys join handler and id with ':'; the handler name is escaped so these differ.
    assert await claim(store, Key("x:y", "z")) == Claimed()
    assert await claim(store, Key("x", "y:z")) == Claimed()


async def test_stats_count_per_handler(store: InboxStore) -> None:
    for n in range(3):
        await claim(store, Key("a", f"e{n}"), token=f"t{n}")
    await store.complete(Key("a", "e0"), token="t0")
    await claim(store, Key("b", "e0"))
    stats = {s.handler: s for s in await store.stats()}
    assert (stats["a"].completed, stats["a"].in_progress) == (1, 2)
    assert (stats["b"].completed, stats["b"].in_progress) == (0, 1)


async def test_purge_removes_old_done_entries_of_a_handler_and_never_a_live_claim(
    store: InboxStore,
) -> None:
    for handler in ("a", "b"):
        await claim(store, Key(handler, "done"))
        await store.complete(Key(handler, "done"), token="t1")
        await claim(store, Key(handler, "live"))
    assert await store.purge(older_than=3600) == 0
    assert await store.purge(older_than=0, handler="a") == 1
    assert await claim(store, Key("a", "done"), token="t2") == Claimed()
    assert await store.purge(older_than=0) == 1
    assert isinstance(await claim(store, Key("a", "live"), token="t3"), InProgress)
    assert isinstance(await claim(store, Key("b", "live"), token="t3"), InProgress)


async def test_concurrent_claims_from_two_connections_grant_exactly_one(
    inbox_settings: InboxSettings, store: InboxStore
) -> None:
    other = (
        open_store(inbox_settings)
        if inbox_settings.url.get_secret_value() != "memory://"
        else store
    )
    await other.open()
    try:
        results = await asyncio.gather(
            *(
                claim(s, Key("race", f"e{n}"), token=f"{side}{n}")
                for n in range(20)
                for side, s in (("a", store), ("b", other))
            )
        )
    finally:
        if other is not store:
            await other.close()
    assert sum(isinstance(r, Claimed) for r in results) == 20
    assert sum(isinstance(r, InProgress) for r in results) == 20


async def test_opening_without_create_refuses_a_missing_inbox(
    inbox_settings: InboxSettings,
) -> None:
    if inbox_settings.url.get_secret_value().startswith(("memory", "redis")):
        pytest.skip("memory and Redis inboxes have no schema to be missing")
    store = open_store(inbox_settings)
    with pytest.raises(InboxError):
        await store.open(create=False)
        await store.stats()
    await store.close()


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:///", "sqlite:///x.db?mode=ro"],
)
def test_a_malformed_sqlite_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///relative\.db or sqlite:////absolute"):
        open_store(InboxSettings.model_validate({"url": url}))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:CANARY-p4ss@127.0.0.1:1/db", "postgresql://app:***@127.0.0.1:1/db"),
        ("redis://:CANARY-p4ss@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ],
)
async def test_an_unreachable_store_is_an_inbox_error_without_the_password(
    url: str, shown: str
) -> None:
    store = open_store(InboxSettings.model_validate({"url": url}))
    with pytest.raises(InboxError) as caught:
        await store.open()
    await store.close()
    assert shown in str(caught.value)
    assert "CANARY" not in str(caught.value)
    assert caught.value.exit_code == 9


async def test_a_sqlite_file_in_a_missing_folder_is_an_inbox_error(tmp_path: Path) -> None:
    store = open_store(InboxSettings.model_validate({"url": f"sqlite:///{tmp_path}/no/x.db"}))
    with pytest.raises(InboxError, match="cannot open the SQLite inbox"):
        await store.open()


def test_a_store_whose_driver_is_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "eventworker.inbox.stores.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # makes `import asyncpg` fail
    with pytest.raises(ConfigError, match=r"pip install 'eventworker\[postgres\]'"):
        open_store(InboxSettings.model_validate({"url": "postgresql://localhost/db"}))
