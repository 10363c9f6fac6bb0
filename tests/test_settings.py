"""Settings: defaults < TOML < environment < options, config discovery, and no leaked secret."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from eventworker.errors import ConfigError, ExitCode
from eventworker.settings import Settings, load_settings, redact_url, split_urls

CANARY = "CANARY-p4ss"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No EVENTWORKER_* variable leaks in, and the working directory is an empty tmp dir."""
    for key in list(os.environ):
        if key.startswith("EVENTWORKER_"):
            monkeypatch.delenv(key)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _config_error(path: str | Path | None = None, **overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, **overrides)
    return info.value


def _everything_shown(error: BaseException) -> str:
    """What a user could ever see of an error: its text, repr and full traceback."""
    return "".join([str(error), repr(error), *traceback.format_exception(error)])


# precedence


def test_without_file_environment_or_options_the_defaults_apply() -> None:
    settings = load_settings()
    assert (settings.url.get_secret_value(), settings.exchange, settings.queue_prefix) == (
        "amqp://guest:guest@localhost:5672/",
        "eventworker",
        "eventworker.",
    )
    assert (settings.queue_type, settings.concurrency, settings.prefetch) == ("quorum", 16, 0)


def test_a_toml_file_beats_the_defaults(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", 'exchange = "from-toml"\nconcurrency = 3\n')
    settings = load_settings(config)
    assert (settings.exchange, settings.concurrency, settings.queue_prefix) == (
        "from-toml",
        3,
        "eventworker.",
    )


def test_the_environment_beats_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path / "c.toml", 'exchange = "from-toml"\nconcurrency = 3\n')
    monkeypatch.setenv("EVENTWORKER_CONCURRENCY", "5")
    settings = load_settings(config)
    assert (settings.exchange, settings.concurrency) == ("from-toml", 5)


def test_options_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(
        tmp_path / "c.toml", 'exchange = "from-toml"\nconcurrency = 3\nqueue_prefix = "toml."\n'
    )
    monkeypatch.setenv("EVENTWORKER_CONCURRENCY", "5")
    monkeypatch.setenv("EVENTWORKER_QUEUE_PREFIX", "env.")
    settings = load_settings(config, concurrency=7)
    assert (settings.exchange, settings.queue_prefix, settings.concurrency) == (
        "from-toml",
        "env.",
        7,
    )


def test_an_option_given_as_none_counts_as_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTWORKER_CONCURRENCY", "5")
    assert load_settings(concurrency=None).concurrency == 5


def test_the_broker_url_exchange_and_prefix_are_set_by_their_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTWORKER_URL", "amqps://app:secret@rabbit.example:5671/prod")
    monkeypatch.setenv("EVENTWORKER_EXCHANGE", "domain-events")
    monkeypatch.setenv("EVENTWORKER_QUEUE_PREFIX", "billing.")
    settings = load_settings()
    assert (settings.url.get_secret_value(), settings.exchange, settings.queue_prefix) == (
        "amqps://app:secret@rabbit.example:5671/prod",
        "domain-events",
        "billing.",
    )


def test_a_nested_variable_sets_one_field_and_keeps_the_toml_siblings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path / "c.toml", "[retry]\nmax_attempts = 3\ndelays = [2, 4]\n")
    monkeypatch.setenv("EVENTWORKER_RETRY__MAX_ATTEMPTS", "7")
    retry = load_settings(config).retry
    assert (retry.max_attempts, retry.delays) == (7, (2.0, 4.0))


def test_retry_overrides_are_read_per_handler_from_toml(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "c.toml", "[retry_overrides.bill_order]\nmax_attempts = 2\ndelays = [30]\n"
    )
    override = load_settings(config).retry_overrides["bill_order"]
    assert (override.max_attempts, override.delays) == (2, (30.0,))


def test_plugins_and_handlers_are_lists_in_toml(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", 'plugins = ["demo"]\nhandlers = ["greet", "flaky"]\n')
    settings = load_settings(config)
    assert (settings.plugins, settings.handlers) == (("demo",), ("greet", "flaky"))


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.exchange = "other"  # type: ignore[misc]  # the point: it must refuse


# which file


def test_eventworker_toml_in_the_working_directory_is_picked_up(clean_env: Path) -> None:
    _write(clean_env / "eventworker.toml", 'exchange = "from-cwd"\n')
    assert load_settings().exchange == "from-cwd"


def test_eventworker_toml_elsewhere_is_not_picked_up(clean_env: Path) -> None:
    _write(clean_env.parent / "eventworker.toml", 'exchange = "from-parent"\n')
    assert load_settings().exchange == "eventworker"


def test_eventworker_config_names_the_file(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(clean_env / "eventworker.toml", 'exchange = "from-cwd"\n')
    monkeypatch.setenv(
        "EVENTWORKER_CONFIG", str(_write(tmp_path / "e.toml", 'exchange = "from-var"\n'))
    )
    assert load_settings().exchange == "from-var"


def test_an_explicit_file_beats_eventworker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "EVENTWORKER_CONFIG", str(_write(tmp_path / "e.toml", 'exchange = "from-var"\n'))
    )
    explicit = _write(tmp_path / "x.toml", 'exchange = "from-option"\n')
    assert load_settings(str(explicit)).exchange == "from-option"


def test_a_missing_explicit_file_is_a_config_error(tmp_path: Path) -> None:
    error = _config_error(tmp_path / "nope.toml")
    assert "nope.toml" in str(error)
    assert error.exit_code == ExitCode.CONFIG


def test_a_missing_file_named_by_eventworker_config_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTWORKER_CONFIG", str(tmp_path / "gone.toml"))
    assert "gone.toml" in str(_config_error())


def test_a_directory_given_as_the_config_file_is_a_config_error(tmp_path: Path) -> None:
    assert "not found" in str(_config_error(tmp_path))


# invalid settings


def test_an_unknown_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", 'exchnage = "typo"\n')
    assert "exchnage" in str(_config_error(config))


def test_an_unknown_key_in_a_section_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "[retry]\nmax_atempts = 3\n")
    assert "retry.max_atempts" in str(_config_error(config))


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "exchange = = 'x'\n")
    error = _config_error(config)
    assert "c.toml" in str(error)
    assert error.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"queue_type": "stream"}, "queue_type"),
        ({"exchange": ""}, "exchange"),
        ({"retry": {"delays": [1, -1]}}, "retry.delays"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_an_invalid_value_is_a_config_error_naming_the_setting(
    overrides: dict[str, object], field: str
) -> None:
    assert f"{field}:" in str(_config_error(None, **overrides))


def test_a_url_that_is_not_amqp_is_a_config_error_naming_the_setting() -> None:
    assert "url:" in str(_config_error(url="http://localhost/"))


# no secret in errors


def test_an_invalid_url_option_never_shows_its_password() -> None:
    error = _config_error(url=f"http://u:{CANARY}@h/")
    assert "url" in str(error)
    assert CANARY not in _everything_shown(error)


def test_an_invalid_url_variable_never_shows_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTWORKER_URL", f"http://u:{CANARY}@h/")
    assert CANARY not in _everything_shown(_config_error())


def test_an_invalid_url_in_toml_never_shows_its_password(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", f'url = "http://u:{CANARY}@h/"\n')
    assert CANARY not in _everything_shown(_config_error(config))


def test_another_invalid_setting_never_shows_the_password_of_a_valid_url(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", f'url = "amqp://u:{CANARY}@h/"\nconcurrency = 0\n')
    error = _config_error(config, prefetch=-1)
    assert "concurrency" in str(error)
    assert CANARY not in _everything_shown(error)


def test_a_toml_syntax_error_near_the_url_never_shows_its_password(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", f'url = "amqp://u:{CANARY}@h/\nexchange = "x"\n')
    assert CANARY not in _everything_shown(_config_error(config))


def test_a_url_given_twice_in_toml_never_shows_its_password(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", f'url = "amqp://u:{CANARY}@h/"\nurl = "x"\n')
    assert CANARY not in _everything_shown(_config_error(config))


def test_the_url_is_hidden_in_the_repr_of_the_settings() -> None:
    settings = load_settings(url=f"amqp://u:{CANARY}@h/")
    assert CANARY not in repr(settings)
    assert CANARY not in str(settings.model_dump())


def test_list_variables_take_comma_separated_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTWORKER_HANDLERS", "greet, flaky")
    monkeypatch.setenv("EVENTWORKER_PLUGINS", "demo")
    settings = load_settings()
    assert settings.handlers == ("greet", "flaky")
    assert settings.plugins == ("demo",)


def test_a_malformed_variable_is_reported_as_that_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTWORKER_RETRY_OVERRIDES", "{not json")
    error = _config_error()
    assert "retry_overrides" in str(error)
    assert "environment" in str(error)
    assert "config file" not in str(error)


def test_an_unknown_variable_warns_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTWORKER_CONCURENCY", "4")
    monkeypatch.setenv("EVENTWORKER_METRIC_PORT", "9100")
    monkeypatch.setenv("EVENTWORKER_TEST_ANYTHING", "1")  # the test suite's own
    monkeypatch.setattr("eventworker.settings._warned_about_environment", False)
    load_settings()
    err = capsys.readouterr().err
    assert "EVENTWORKER_CONCURENCY (did you mean EVENTWORKER_CONCURRENCY?)" in err
    assert "EVENTWORKER_METRIC_PORT (did you mean EVENTWORKER_METRICS_PORT?)" in err
    assert "EVENTWORKER_TEST_ANYTHING" not in err and err.count("warning:") == 2


def test_a_bad_value_names_the_variable_that_holds_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "eventworker.toml"
    config.write_text("exchange = 'from-file'\n")
    monkeypatch.setenv("EVENTWORKER_RETRY__MAX_ATTEMPTS", "many")
    error = _config_error(config)
    assert "retry.max_attempts: " in str(error)
    assert "(environment variable EVENTWORKER_RETRY__MAX_ATTEMPTS)" in str(error)
    assert str(config) not in str(error)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_retry_delay_in_toml_is_a_config_error(tmp_path: Path, value: str) -> None:
    config = _write(tmp_path / "c.toml", f"[retry]\ndelays = [1, {value}]\n")
    assert "retry.delays" in str(_config_error(config))


# redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://user:secret@host/vh", "amqp://user:***@host/vh"),
        ("amqps://user:secret@host:5671/", "amqps://user:***@host:5671/"),
        ("AMQP://user:secret@host/", "AMQP://user:***@host/"),
        ("amqp://:secret@host/", "amqp://:***@host/"),
        ("amqp://user:@host/", "amqp://user:***@host/"),
        ("amqp://u:CANARY@[::1", "amqp://u:***@[::1"),
        ("amqp://u:p%40ss%2Fw@h/", "amqp://u:***@h/"),
        (
            "cannot reach amqp://a:one@h1/ or amqp://b:two@h2/",
            "cannot reach amqp://a:***@h1/ or amqp://b:***@h2/",
        ),
        ("amqp://guest:PW SECRET@host/", "amqp://guest:***@host/"),
        ("amqp://u:a:b@c,d e@h1/,amqp://v:f, g@h2/", "amqp://u:***@h1/,amqp://v:***@h2/"),
        ("at amqp://u:x://y@h/: refused", "at amqp://u:***@h/: refused"),
    ],
)
def test_redact_url_replaces_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url", ["amqp://localhost/", "amqp://user@host/", "not a url", "amqp://host:5672/vh"]
)
def test_redact_url_leaves_a_url_without_a_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize("url", ["amqp://u:CAN@ARY@h/", "amqp://u:CAN/ARY@h/"])
def test_redact_url_hides_a_password_holding_unencoded_at_or_slash(url: str) -> None:
    assert "ARY" not in redact_url(url)


def test_settings_show_their_url_redacted() -> None:
    assert load_settings(url="amqp://u:secret@h/").redacted_url() == "amqp://u:***@h/"


# effective_prefetch


def test_prefetch_zero_means_twice_the_handler_concurrency() -> None:
    assert Settings().effective_prefetch(8) == 16


def test_an_explicit_prefetch_is_used_whatever_the_concurrency() -> None:
    settings = load_settings(prefetch=5)
    assert [settings.effective_prefetch(c) for c in (1, 8, 100)] == [5, 5, 5]


def test_the_derived_prefetch_is_capped_at_the_amqp_maximum() -> None:
    assert Settings().effective_prefetch(40_000) == 65_535


def test_a_cluster_is_a_toml_list_or_a_comma_separated_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('url = ["amqp://u:p1@n1:5672/", "amqp://u:p2@n2:5672/"]\n')
    from_file = load_settings(config)
    assert [u.get_secret_value() for u in from_file.urls()] == [
        "amqp://u:p1@n1:5672/",
        "amqp://u:p2@n2:5672/",
    ]
    assert from_file.redacted_url() == "amqp://u:***@n1:5672/,amqp://u:***@n2:5672/"
    monkeypatch.setenv("EVENTWORKER_URL", "amqp://a:x@h1/, amqps://b:y@h2/")
    from_env = load_settings()
    assert [u.get_secret_value() for u in from_env.urls()] == ["amqp://a:x@h1/", "amqps://b:y@h2/"]


def test_every_url_of_a_list_must_be_amqp() -> None:
    error = _config_error(url="amqp://h1/,http://h2/")
    assert "amqp://" in str(error)


def test_shuffle_tries_the_nodes_in_varying_order() -> None:
    urls = ",".join(f"amqp://h{n}/" for n in range(8))
    settings = load_settings(url=urls, url_order="shuffle")
    orders = {tuple(u.get_secret_value() for u in settings.urls()) for _ in range(20)}
    assert len(orders) > 1
    assert all(sorted(order) == sorted(split_urls(urls)) for order in orders)


# the inbox


def test_the_inbox_is_set_by_its_nested_variables_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path / "c.toml", '[inbox]\nname = "billing_inbox"\nlease = 5\n')
    monkeypatch.setenv("EVENTWORKER_INBOX__URL", f"postgresql://app:{CANARY}@db/app")
    monkeypatch.setenv("EVENTWORKER_INBOX__IDEMPOTENT", "true")
    inbox = load_settings(config).inbox
    assert (inbox.name, inbox.lease, inbox.idempotent) == ("billing_inbox", 5.0, True)
    assert inbox.redacted_url() == "postgresql://app:***@db/app"
    assert CANARY not in repr(inbox)


@pytest.mark.parametrize(
    "url", [f"mysql://app:{CANARY}@db/app", f"app:{CANARY}@db", f"postgresql:/app:{CANARY}@db"]
)
def test_an_inbox_url_naming_no_store_is_a_config_error_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("EVENTWORKER_INBOX__URL", url)
    error = _config_error()
    assert "inbox.url" in str(error)
    assert "sqlite:///" in str(error)
    assert CANARY not in _everything_shown(error)


@pytest.mark.parametrize("name", ["", "1st", "bad-name", "x" * 49, "a;drop table x"])
def test_an_inbox_name_that_is_no_plain_identifier_is_a_config_error(name: str) -> None:
    assert "inbox.name" in str(_config_error(inbox={"name": name}))
