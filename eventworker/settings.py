"""Settings: defaults < TOML file < environment (``EVENTWORKER_*``) < command-line options.

Read once by the CLI and passed down; nothing else in the package reads the environment.
"""

from __future__ import annotations

import difflib
import os
import random
import re
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from eventworker.errors import ConfigError

#: Environment variable naming the TOML file when ``--config`` is not given.
CONFIG_ENV = "EVENTWORKER_CONFIG"
#: The TOML file read from the working directory when neither option nor variable names one.
DEFAULT_CONFIG_FILE = "eventworker.toml"

#: Where a URL starts: a scheme and ``://``.
_SCHEME = r"[a-z][a-z0-9+.-]*://"
#: The password runs to the *last* ``@`` before the next URL (or the end of the text), as URL
#: parsers read one URL: a password may hold an unencoded ``/``, ``@``, ``:``, ``,``, spaces or
#: percent escapes. A next URL starts after a space, a comma, a quote or a bracket. Text after
#: the URL that holds an ``@`` is over-redacted up to it (the safe side); a list of URLs,
#: comma-separated or quoted in a sentence, is redacted URL by URL.
_USERINFO = re.compile(
    rf"(?P<scheme>{_SCHEME})(?P<user>[^:@/\s]*)"
    rf":(?P<password>(?:(?!(?<=[\s,;'\"(<\[]){_SCHEME}).)*)@",
    re.IGNORECASE | re.DOTALL,
)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` -> ``amqp://user:***@host/vh``; works on malformed URLs,
    lists of URLs and sentences that quote URLs too.

    A regular expression rather than ``urllib.parse``, because a parser error would be the place
    where the unredacted URL leaks (its message may quote the input).
    """
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", url)


#: Where a comma-separated list of broker URLs splits: before each further scheme.
_URL_LIST = re.compile(rf",\s*(?={_SCHEME})", re.IGNORECASE)


def split_urls(urls: str) -> list[str]:
    """``"amqp://a/,amqp://b/"`` -> ``["amqp://a/", "amqp://b/"]`` (a single URL stays one)."""
    return [part.strip() for part in _URL_LIST.split(urls) if part.strip()]


def check_database_url(url: str) -> str:
    """``url`` unchanged when a database driver can read its host part: brackets in place, and
    each port (a PostgreSQL URL may name several hosts) a number from 1 to 65535 or absent.

    The drivers would raise on such a URL deep inside their parser, with a traceback and a
    message that may quote the URL; checked with the settings, it is one ``error:`` line.

    Raises:
        ValueError: what is wrong; the message never quotes the URL.
    """
    try:
        urlsplit(url)
    except ValueError:
        raise ValueError(
            "it is not a URL a driver can read (a [ or ] out of place? percent-encode them "
            "in a user name or password)"
        ) from None
    rest = url.partition("://")[2]
    hosts = rest.rpartition("@")[2] if "@" in rest else rest
    for host in re.split(r"[/?#]", hosts, maxsplit=1)[0].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" not in port:
            continue
        digits = port.rpartition(":")[2]
        if digits and not (digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 65_535):
            raise ValueError("its port is not a number from 1 to 65535")
    return url


class RetrySettings(BaseModel):
    """A retry policy as the settings express it (``[retry]`` or ``[retry_overrides.NAME]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_attempts: int = Field(5, ge=1, le=1000)
    delays: tuple[float, ...] = Field((1.0, 10.0, 60.0, 300.0), min_length=1)

    @field_validator("delays")
    @classmethod
    def _positive(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 for d in delays):
            raise ValueError("every retry delay must be a positive number of seconds")
        return tuple(round(d, 3) for d in delays)


class TlsSettings(BaseModel):
    """TLS for ``amqps://`` URLs (``[tls]``). The broker's certificate chain and host name are
    verified by default; ``insecure`` turns both checks off and logs a warning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


#: Store URL schemes of the inbox (``postgres`` is an alias of ``postgresql``).
INBOX_SCHEMES = ("sqlite", "postgresql", "postgres", "redis", "rediss", "memory")


class InboxSettings(BaseModel):
    """The inbox of idempotent handlers (``[inbox]``); docs/idempotency.md explains each."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True
    )

    url: SecretStr = SecretStr("sqlite:///eventworker-inbox.db")
    name: str = Field("eventworker_inbox", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")
    idempotent: bool = False
    lease: float = Field(30.0, gt=0)
    wait: float = Field(60.0, gt=0)
    retention: float = Field(604_800.0, gt=0)
    cleanup_interval: float = Field(3600.0, ge=0)

    @field_validator("url")
    @classmethod
    def _store_url(cls, url: SecretStr) -> SecretStr:
        scheme = url.get_secret_value().partition("://")[0].lower()
        if scheme not in INBOX_SCHEMES or "://" not in url.get_secret_value():
            raise ValueError(
                "the inbox URL must start with sqlite:///, postgresql://, redis://, rediss:// "
                "or memory://"
            )
        if scheme not in ("sqlite", "memory"):
            check_database_url(url.get_secret_value())
        return url

    def redacted_url(self) -> str:
        return redact_url(self.url.get_secret_value())


class HttpSettings(BaseModel):
    """The HTTP ingress (``eventworker serve``, ``[http]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65_535)
    #: Binding-key patterns (``*``, ``#``) a routing key must match to be accepted.
    allowed_keys: tuple[str, ...] = ("#",)
    token: SecretStr | None = None
    hmac_secret: SecretStr | None = None
    signature_header: str = Field("X-Signature-256", min_length=1, max_length=100)
    max_batch_events: int = Field(1000, ge=1, le=100_000)
    max_batch_bytes: int = Field(10_485_760, ge=1)
    signature_tolerance: int = Field(
        300,
        ge=1,
        le=86_400,
        description="Seconds a signature's timestamp may be away from the server's clock, "
        "either way; a replay of an accepted signature is refused within this window.",
    )
    max_seen_signatures: int = Field(
        100_000,
        ge=1,
        description="Accepted signatures remembered at once (each for the tolerance window) "
        "to refuse replays; a request that would need one more is answered 503.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers, from the "
        "connection or the request's first byte; then the connection is closed.",
    )
    body_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a client has to send a whole body once its headers arrived; "
        "then 408 and the connection is closed.",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle connection is kept open between two requests."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections (and requests in progress) at most; requests beyond are "
        "answered 503.",
    )
    docs: Literal["auth", "public", "off"] = Field(
        "auth",
        description="/docs and /openapi.json: behind the same token and signature as the "
        "events (auth; open when neither is set), open to all (public), or not served (off).",
    )


class ConsoleSettings(BaseModel):
    """The operator console (``eventworker console``, ``[console]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address to listen on; anything but a loopback address is refused unless "
        "tokens or trusted_user_header is set.",
    )
    port: int = Field(8025, ge=1, le=65_535, description="Port to listen on.")
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Named tokens, one per operator: a browser signs in with one, a script sends "
        "Authorization: Bearer <token>; the name is who the audit log says acted.",
    )
    trusted_user_header: str = Field(
        "",
        max_length=100,
        description="A header a reverse proxy in front of the console sets to the signed-in "
        "user (e.g. X-Forwarded-User); a request without it is refused. Only behind a proxy "
        "that strips it from its clients' requests.",
    )
    allow_actions: bool = Field(
        False,
        description="Let the console's users replay and purge dead letters (the operator "
        "role); off, the console is read-only.",
    )
    allow_publish: bool = Field(
        False,
        description="Let operators publish a test event from the catalogue page (each "
        "confirmed by the broker, with an audit log line); off by default.",
    )
    poll_interval: float = Field(
        5.0, gt=0, le=3600, description="Seconds between two reads of the queue depths."
    )
    rate_window: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Seconds of depth history kept in memory for the rates shown.",
    )
    scan_limit: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Dead letters read, at most, for one page of a handler's dead letters "
        "(filters and pages apply to these).",
    )
    body_limit: int = Field(
        65_536, ge=1, description="Bytes of a dead letter's body shown on its page."
    )


class OutboxSettings(BaseModel):
    """The outbox relay (``eventworker outbox relay``, ``[outbox]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    dsn: SecretStr | None = None
    table: str = Field("eventworker_outbox", min_length=1, max_length=83)
    batch_size: int = Field(500, ge=1, le=10_000)
    poll_interval: float = Field(5.0, gt=0)
    retention: float = Field(604_800.0, ge=0)

    @field_validator("dsn")
    @classmethod
    def _known_database(cls, dsn: SecretStr | None) -> SecretStr | None:
        if dsn is not None and not dsn.get_secret_value().startswith(
            ("postgresql://", "postgres://", "sqlite:///")
        ):
            raise ValueError("expected postgresql://user:password@host/db or sqlite:///path")
        if dsn is not None and not dsn.get_secret_value().startswith("sqlite:///"):
            check_database_url(dsn.get_secret_value())
        return dsn


#: A Kubernetes resource quantity (``100m``, ``0.5``, ``128Mi``, ``1G``), or "" for none.
_QUANTITY = r"^$|^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


class KubernetesSettings(BaseModel):
    """What ``eventworker deploy kubernetes`` renders besides the worker's own settings
    (``[kubernetes]``); its options override each."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    split: Literal["none", "handler"] = "none"
    replicas: int = Field(1, ge=0)
    secret: str = Field("eventworker-broker", min_length=1, max_length=253)
    cpu_request: str = Field("100m", pattern=_QUANTITY)
    memory_request: str = Field("128Mi", pattern=_QUANTITY)
    cpu_limit: str = Field("", pattern=_QUANTITY)
    memory_limit: str = Field("", pattern=_QUANTITY)
    service_monitor: bool = False
    autoscale: Literal["none", "keda"] = "none"
    queue_length: int = Field(100, ge=1)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(10, ge=1)
    cooldown: int = Field(300, ge=0)
    polling_interval: int = Field(15, ge=1)
    keda_host_key: str = Field("url", min_length=1, max_length=253)


class ScheduleSettings(BaseModel):
    """One periodic event declared in the settings (``[[schedules]]``); checked further (cron
    expression, timezone, routing key, unique name) where the worker gathers its schedules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200)
    routing_key: str = Field(min_length=1, max_length=255)
    #: The event's data: any JSON value (a TOML table or array, a string, a number).
    data: Any = None
    timezone: str = Field("UTC", min_length=1, max_length=100)
    catch_up: Literal["none", "last", "all"] = "last"


class Settings(BaseSettings):
    """Every setting of eventworker; ``config.example.toml`` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTWORKER_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
        frozen=True,
        allow_inf_nan=False,
    )

    url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
    exchange: str = Field("eventworker", min_length=1, max_length=200)
    queue_prefix: str = Field("eventworker.", max_length=100)
    url_order: Literal["ordered", "shuffle"] = "ordered"
    queue_type: Literal["quorum", "classic"] = "quorum"
    quorum_initial_group_size: int = Field(0, ge=0)
    delivery_limit: int = Field(20, ge=0)
    concurrency: int = Field(16, ge=1, le=10_000)
    prefetch: int = Field(0, ge=0, le=65_535)
    handler_timeout: float = Field(300.0, ge=0)
    grace: float = Field(30.0, ge=0)
    max_body_bytes: int = Field(1_048_576, ge=1)
    max_inflight_bytes: int = Field(67_108_864, ge=0)
    publish_timeout: float = Field(10.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    heartbeat: int = Field(30, ge=0, le=3600)
    broker_consumer_timeout: float = Field(1800.0, ge=0)
    watchdog_interval: float = Field(30.0, ge=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    plugins: Annotated[tuple[str, ...], NoDecode] = ()
    handlers: Annotated[tuple[str, ...], NoDecode] = ()
    middleware: Annotated[tuple[str, ...], NoDecode] = ()
    retry: RetrySettings = Field(default_factory=RetrySettings)
    retry_overrides: dict[str, RetrySettings] = Field(default_factory=dict)
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["pretty", "json"] = "pretty"
    metrics_port: int = Field(0, ge=0, le=65_535)
    processes: int = Field(1, ge=1, le=64)
    metrics_host: str = Field("0.0.0.0", min_length=1)
    metrics_poll_interval: float = Field(15.0, ge=0)
    http: HttpSettings = Field(default_factory=HttpSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    # -- dead letters and topology ----------------------------------------------------------
    #: A queue for events no binding matches, fed by the exchange's alternate exchange; "" = off.
    unrouted_queue: str = Field("", max_length=255)
    #: The management API (http://user:password@host:15672): bindings for ``topology``,
    #: consumers and unacked counts for the console.
    management_url: SecretStr = SecretStr("")
    #: Levels of broker-held delayed delivery (0: off; 25 to 32, a delay up to 2**levels - 1 s).
    delay_levels: int = Field(0, ge=0, le=32)
    # -- periodic events ----------------------------------------------------------------------
    #: Periodic events (``[[schedules]]``), emitted once across all workers (docs/time.md).
    schedules: tuple[ScheduleSettings, ...] = ()

    @field_validator("plugins", "handlers", "middleware", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``EVENTWORKER_HANDLERS=greet,flaky`` as well as a TOML array."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("url", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        """A TOML list of cluster nodes becomes the comma-separated form."""
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @field_validator("delay_levels")
    @classmethod
    def _levels(cls, levels: int) -> int:
        if 0 < levels < 25:
            raise ValueError("delay_levels is 0 (off) or 25 to 32 (25 holds a delay of a year)")
        return levels

    @field_validator("management_url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        value = url.get_secret_value()
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError("the management URL must start with http:// or https://")
        return url

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, url: SecretStr) -> SecretStr:
        parts = split_urls(url.get_secret_value())
        if not parts or not all(p.lower().startswith(("amqp://", "amqps://")) for p in parts):
            raise ValueError("every broker URL must start with amqp:// or amqps://")
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _toml_file.get()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml),)
        return sources

    def redacted_url(self) -> str:
        return redact_url(self.url.get_secret_value())

    def urls(self) -> list[SecretStr]:
        """The broker URLs to try, in the order ``url_order`` says (a cluster has several)."""
        urls = [SecretStr(u) for u in split_urls(self.url.get_secret_value())]
        if self.url_order == "shuffle":
            random.shuffle(urls)
        return urls

    def effective_prefetch(self, concurrency: int) -> int:
        """Prefetch per handler: the setting, or twice the handler's concurrency when 0."""
        return self.prefetch or min(2 * concurrency, 65_535)


_toml_file: ContextVar[Path | None] = ContextVar("_toml_file", default=None)


def config_path(explicit: str | Path | None) -> Path | None:
    """The TOML file to read: ``--config``, else ``$EVENTWORKER_CONFIG``, else ./eventworker.toml.

    Raises:
        ConfigError: an explicitly named file does not exist.
    """
    named = explicit or os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the TOML file, the environment and ``overrides``.

    ``overrides`` are command-line values; ``None`` means "not given" and is dropped.

    Raises:
        ConfigError: the file is not valid TOML, or any value is invalid. The message names
            the setting and the source, never the value (it may be a secret).
    """
    toml = config_path(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    _warn_about_unknown_environment()
    token = _toml_file.set(toml)
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            f"{_source(err['loc'], given, toml)}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # an environment variable that does not parse
        raise ConfigError(f"cannot read a setting from the environment: {exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError; it quotes no values
        raise ConfigError(f"cannot read config file {toml}: {exc}") from None
    finally:
        _toml_file.reset(token)


#: Variables with the prefix that eventworker, its tests and its benchmarks read besides the
#: settings themselves.
_OTHER_VARIABLES = (CONFIG_ENV, "EVENTWORKER_SUPERVISOR_PID")
_OTHER_PREFIXES = ("EVENTWORKER_TEST_", "EVENTWORKER_BENCH_")
_warned_about_environment = False


def _setting_variables(model: type[BaseModel], prefix: str) -> tuple[set[str], set[str]]:
    """The environment variables that set a field of ``model``, and the prefixes of those that
    set part of one (``__``: a nested model's field, a dict's key)."""
    names, open_prefixes = set(), set()
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        names.add(variable)
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            # An unknown field under a nested model is already an error of its own.
            open_prefixes.add(f"{variable}__")
        elif getattr(kind, "__origin__", None) is dict:
            open_prefixes.add(f"{variable}__")
    return names, open_prefixes


def unknown_environment() -> list[str]:
    """A warning for each ``EVENTWORKER_*`` variable no setting reads (a typo is otherwise
    ignored in silence, while the same typo in the TOML file is an error), with the closest
    known name."""
    names, open_prefixes = _setting_variables(Settings, "EVENTWORKER_")
    names |= set(_OTHER_VARIABLES)
    warnings = []
    for variable in sorted(os.environ):
        upper = variable.upper()
        if not upper.startswith("EVENTWORKER_") or upper in names:
            continue
        if upper.startswith((*_OTHER_PREFIXES, *open_prefixes)):
            continue
        close = difflib.get_close_matches(upper, sorted(names), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"unknown environment variable {variable}{hint}: no setting reads it")
    return warnings


def _warn_about_unknown_environment() -> None:
    global _warned_about_environment
    if _warned_about_environment:
        return
    _warned_about_environment = True
    for warning in unknown_environment():
        sys.stderr.write(f"warning: {warning}\n")


def _source(loc: tuple[int | str, ...], given: dict[str, Any], toml: Path | None) -> str:
    """Where the bad value at ``loc`` came from: the environment variable that holds it, the
    command-line option, or the file (the value itself is never shown: it may be a secret)."""
    parts = [str(p).upper() for p in loc]
    for n in range(len(parts), 0, -1):
        variable = "EVENTWORKER_" + "__".join(parts[:n])
        if any(v.upper() == variable for v in os.environ):
            return f" (environment variable {variable})"
    if loc and loc[0] in given:
        return " (command-line option)"
    return f" (file {toml})" if toml else ""
