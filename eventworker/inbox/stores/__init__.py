"""Which inbox store a URL names, and the :class:`~eventworker.inbox.claims.Inbox` built on it.

The PostgreSQL and Redis drivers are optional extras (``eventworker[postgres]``,
``eventworker[redis]``); their stores are imported only when a URL names them, so a worker
without them installed runs fine until it is configured to use one.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventworker.errors import ConfigError
from eventworker.inbox.claims import Inbox
from eventworker.inbox.protocol import InboxStore
from eventworker.settings import InboxSettings

#: Connections a store pools at most, whatever the concurrency of the handlers using it.
MAX_POOL = 64


def open_store(settings: InboxSettings, *, connections: int = 10) -> InboxStore:
    """The store ``settings.url`` names, not opened yet; ``connections``: how many handlings
    may use it at once (sizes the pools of PostgreSQL and Redis).

    Raises:
        ConfigError: the URL is malformed or names a store whose driver is not installed; the
            message shows the URL with its password masked.
    """
    url = settings.url.get_secret_value()
    scheme = url.partition("://")[0].lower()
    pool = min(connections + 2, MAX_POOL)
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path or "?" in path:
            raise ConfigError(
                f"inbox.url {settings.redacted_url()}: a SQLite inbox is sqlite:///relative.db "
                f"or sqlite:////absolute/path.db"
            )
        from eventworker.inbox.stores.sqlite import SqliteInboxStore

        return SqliteInboxStore(path, name=settings.name)
    if scheme in ("postgresql", "postgres"):
        try:
            from eventworker.inbox.stores.postgres import PostgresInboxStore
        except ImportError as exc:
            raise _missing("PostgreSQL", "asyncpg", "postgres") from exc
        return PostgresInboxStore(url, name=settings.name, pool_size=pool)
    if scheme in ("redis", "rediss"):
        try:
            from eventworker.inbox.stores.redis import RedisInboxStore
        except ImportError as exc:
            raise _missing("Redis", "redis", "redis") from exc
        return RedisInboxStore(
            url, name=settings.name, retention=settings.retention, pool_size=pool
        )
    if scheme == "memory":
        from eventworker.inbox.stores.memory import MemoryInboxStore

        return MemoryInboxStore()
    raise ConfigError(f"inbox.url {settings.redacted_url()}: unknown store {scheme!r}")


def _missing(store: str, driver: str, extra: str) -> ConfigError:
    return ConfigError(
        f"the {store} inbox needs the {driver} package: pip install 'eventworker[{extra}]'"
    )


def build_inbox(
    settings: InboxSettings, *, handlers: Mapping[str, int], store: InboxStore | None = None
) -> Inbox | None:
    """The :class:`Inbox` for the idempotent ``handlers`` (name -> concurrency), on ``store``
    or on the store the settings name; None when there are no such handlers. Not started.

    Raises:
        ConfigError: as :func:`open_store`.
    """
    if not handlers:
        return None
    inbox = Inbox(
        store or open_store(settings, connections=sum(handlers.values())),
        lease=settings.lease,
        wait=settings.wait,
        retention=settings.retention,
        cleanup_interval=settings.cleanup_interval,
    )
    inbox.handlers = tuple(handlers)
    return inbox
