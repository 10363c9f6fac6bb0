"""Connecting: TLS defaults, and errors that name the broker but never the password."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from eventworker.amqp.connection import connect, tls_context
from eventworker.errors import BrokerAuthError, BrokerUnreachableError
from eventworker.settings import TlsSettings

CANARY = "CANARY-p4ss-7d2e"


def test_tls_verifies_the_chain_and_the_host_name_by_default() -> None:
    context = tls_context(TlsSettings())
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_insecure_tls_is_explicit_and_warns(log_lines: list[str]) -> None:
    context = tls_context(TlsSettings(insecure=True))
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
    assert any("WARNING" in line and "TLS verification is OFF" in line for line in log_lines)


def test_an_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerUnreachableError, match="cannot load TLS files"):
        tls_context(TlsSettings(ca_file=tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("url", "error", "shown"),
    [
        (f"amqp://guest:{CANARY}@127.0.0.1:1/", BrokerUnreachableError, "127.0.0.1:1"),
        (f"amqp://u:{CANARY}@[::1", BrokerUnreachableError, "malformed"),
        (f"amqps://u:{CANARY}@127.0.0.1:1/", BrokerUnreachableError, "127.0.0.1:1"),
    ],
    ids=["refused", "malformed", "tls-refused"],
)
async def test_connection_errors_never_carry_the_password(
    url: str, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as caught:
        await connect(SecretStr(url), role="test", timeout=3, heartbeat=5)
    assert CANARY not in str(caught.value)
    assert "***" in str(caught.value) and shown in str(caught.value)


async def test_a_wrong_password_is_an_auth_error(broker_url: str) -> None:
    url = broker_url.replace("guest:guest@", f"guest:{CANARY}@")
    with pytest.raises(BrokerAuthError) as caught:
        await connect(SecretStr(url), role="test", timeout=5, heartbeat=5)
    assert CANARY not in str(caught.value)


async def test_a_list_of_brokers_connects_to_the_first_that_answers(broker_url: str) -> None:
    dead = f"amqp://guest:{CANARY}@127.0.0.1:1/"
    connection = await connect(
        SecretStr(f"{dead},{broker_url}"), role="test", timeout=3, heartbeat=5
    )
    try:
        assert not connection.is_closed
        assert str(connection.url.port) == broker_url.rsplit(":", 1)[1].split("/")[0]
    finally:
        await connection.close()


async def test_when_no_broker_of_a_list_answers_each_is_named_without_its_password() -> None:
    urls = [SecretStr(f"amqp://u:{CANARY}@127.0.0.1:{port}/") for port in (1, 2)]
    with pytest.raises(BrokerUnreachableError) as caught:
        await connect(urls, role="test", timeout=3, heartbeat=5)
    text = str(caught.value)
    assert "no broker of 2 answered" in text
    assert "127.0.0.1:1" in text and "127.0.0.1:2" in text
    assert CANARY not in text
