"""The Redis inbox (``redis://[:password@]host:6379/db``, ``rediss://`` for TLS), redis-py asyncio.

For workers on many machines when entries should expire by themselves. Each entry is a hash
under ``<name>:<handler>:<event id>`` (``%`` and ``:`` in the handler name escaped) that
Redis itself expires: a claim after its lease (so a dead worker's claim simply vanishes and
the next copy claims afresh), a done entry after the retention. Every change is a Lua script,
so check and write are one atomic step (compare-and-set on the claim's token). Leases are
measured by the Redis server's clock. The server must not evict keys under memory pressure
(``maxmemory-policy noeviction``): an evicted entry lets a duplicate run again.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from eventworker.errors import InboxError
from eventworker.inbox.protocol import (
    Claimed,
    ClaimResult,
    Completed,
    Conflict,
    HandlerStats,
    InProgress,
    Key,
)
from eventworker.settings import redact_url

_NOW = "local t = redis.call('TIME') local now = t[1] .. '.' .. string.format('%06d', t[2])"

#: KEYS[1] entry; ARGV: body hash, token, owner, lease ms, handler name.
_CLAIM = f"""
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  {_NOW}
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'hash', ARGV[1], 'token', ARGV[2],
             'owner', ARGV[3], 'handler', ARGV[5], 'claimed_at', now, 'duplicates', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {{'claimed'}}
end
local stored = redis.call('HGET', KEYS[1], 'hash')
if stored ~= ARGV[1] then return {{'conflict', stored}} end
if state == 'done' then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {{'done'}}
end
return {{'busy', tostring(redis.call('PTTL', KEYS[1])), redis.call('HGET', KEYS[1], 'owner')}}
"""
#: ARGV: token, lease ms. A done entry keeps its retention.
_RENEW = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'claimed' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
#: ARGV: token, retention ms.
_COMPLETE = f"""
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'claimed' then
  {_NOW}
  redis.call('HSET', KEYS[1], 'state', 'done', 'done_at', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
#: ARGV: token.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'claimed' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: ARGV: cutoff (seconds since the epoch), handler name or ''.
_PURGE = """
if redis.call('HGET', KEYS[1], 'state') == 'done'
   and (ARGV[2] == '' or redis.call('HGET', KEYS[1], 'handler') == ARGV[2])
   and tonumber(redis.call('HGET', KEYS[1], 'done_at')) <= tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Keys read per SCAN step for stats and purge.
_SCAN_BATCH = 1000


def _escape(handler: str) -> str:
    return handler.replace("%", "%25").replace(":", "%3A")


class RedisInboxStore:
    """An :class:`~eventworker.inbox.protocol.InboxStore` of expiring hashes in Redis."""

    def __init__(
        self, url: str, *, name: str, retention: float, pool_size: int = 10, timeout: float = 10.0
    ) -> None:
        self.url = redact_url(url)
        self.name = name
        self._retention_ms = max(int(retention * 1000), 1)
        # A blocking pool waits for a free connection rather than failing when all are busy.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=max(pool_size, 2),
            timeout=timeout,
        )
        self._client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: self._client.register_script(lua)
            for name, lua in (
                ("claim", _CLAIM),
                ("renew", _RENEW),
                ("complete", _COMPLETE),
                ("release", _RELEASE),
                ("purge", _PURGE),
            )
        }

    def _key(self, key: Key) -> str:
        return f"{self.name}:{_escape(key.handler)}:{key.event_id}"

    async def _run(self, script: str, key: str, *args: Any) -> Any:
        try:
            return await self._scripts[script](keys=[key], args=list(args))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> InboxError:
        detail = redact_url(str(exc)) or type(exc).__name__
        return InboxError(f"the Redis inbox {self.url}: {detail}")

    async def open(self, *, create: bool = True) -> None:
        # Redis needs no schema, and "no entries" and "no inbox" look the same there.
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def close(self) -> None:
        await self._client.aclose()

    async def claim(
        self, key: Key, *, body_hash: str, owner: str, token: str, lease: float
    ) -> ClaimResult:
        lease_ms = max(int(lease * 1000), 1)
        answer = await self._run(
            "claim", self._key(key), body_hash, token, owner, lease_ms, key.handler
        )
        match answer[0]:
            case "claimed":
                return Claimed()
            case "done":
                return Completed()
            case "conflict":
                return Conflict(answer[1])
        # PTTL is -2 when the key vanished meanwhile: poll again at once.
        return InProgress(max(int(answer[1]), 0) / 1000, answer[2] or "")

    async def renew(self, key: Key, *, token: str, lease: float) -> bool:
        return bool(await self._run("renew", self._key(key), token, max(int(lease * 1000), 1)))

    async def complete(self, key: Key, *, token: str) -> bool:
        return bool(await self._run("complete", self._key(key), token, self._retention_ms))

    async def release(self, key: Key, *, token: str) -> None:
        await self._run("release", self._key(key), token)

    async def stats(self) -> list[HandlerStats]:
        rows: dict[str, list[int]] = {}
        try:
            async for keys in self._batches():
                pipe = self._client.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(k, "handler", "state", "duplicates")
                for handler, state, duplicates in await pipe.execute():
                    if handler is None:
                        continue  # expired between SCAN and HMGET
                    row = rows.setdefault(handler, [0, 0, 0, 0])
                    row[0 if state == "done" else 1] += 1
                    row[3] += int(duplicates or 0)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        # A claim whose lease ran out is gone from Redis, so none is ever "expired".
        return [HandlerStats(h, *counts) for h, counts in sorted(rows.items())]

    async def purge(self, *, older_than: float, handler: str | None = None) -> int:
        try:
            seconds, micros = await self._client.time()
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        cutoff = seconds + micros / 1e6 - older_than
        removed = 0
        async for keys in self._batches():
            for k in keys:
                removed += int(await self._run("purge", k, repr(cutoff), handler or ""))
        return removed

    async def _batches(self) -> Any:
        """The keys of this inbox, a SCAN step at a time."""
        cursor: int | str = 0
        while True:
            cursor, keys = await self._client.scan(
                cursor=int(cursor), match=f"{self.name}:*", count=_SCAN_BATCH
            )
            if keys:
                yield keys
            if int(cursor) == 0:
                return
