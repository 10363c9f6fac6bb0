"""Connecting to RabbitMQ: the one place where connection errors become eventworker errors.

Error messages carry the redacted URL (``amqp://user:***@host``) and never the exception text
of a URL parser, which may quote the password. Importing this module installs eventworker's
frame decoding into aiormq (``amqp.frames.install``): a message whose header the client
library cannot decode then costs only itself, never the connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    ProbableAuthenticationError,
)
from loguru import logger
from pydantic import SecretStr

from eventworker.amqp import frames
from eventworker.errors import BrokerAuthError, BrokerUnreachableError
from eventworker.settings import TlsSettings, redact_url, split_urls

frames.install()

#: What an operation on a channel or connection that died under it raises.
CHANNEL_GONE = (ChannelInvalidStateError, AMQPError, ConnectionError, RuntimeError)


def connection_name(role: str) -> str:
    """What the management UI shows: role, host and pid identify the process."""
    return f"eventworker {role} {socket.gethostname()}:{os.getpid()}"


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """The TLS context for ``amqps://``: chain and host name verified unless ``insecure``.

    Raises:
        BrokerUnreachableError: a CA, certificate or key file cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerUnreachableError(f"cannot load TLS files: {exc}") from None
    if tls.insecure:
        logger.warning(
            "TLS verification is OFF (tls.insecure): the broker's certificate and host name "
            "are not checked; anyone on the network path can read and change the traffic"
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    urls: SecretStr | Sequence[SecretStr],
    *,
    role: str,
    timeout: float,
    heartbeat: int,
    tls: TlsSettings | None = None,
) -> AbstractConnection:
    """Open a plain (not "robust") connection to the first broker of ``urls`` that answers.

    Plain, because the worker owns reconnection: it verifies topology and consumers after each
    one instead of trusting a hidden restore. ``urls`` is one URL, a comma-separated list or a
    sequence (the nodes of a cluster); each is tried in turn, so a reconnect after a node loss
    moves on to the next live node.

    Raises:
        BrokerAuthError: credentials or virtual host refused (not retried on other nodes: a
            cluster shares its users).
        BrokerUnreachableError: no broker answered; the message names each redacted URL.
    """
    candidates = (
        [SecretStr(u) for u in split_urls(urls.get_secret_value())]
        if isinstance(urls, SecretStr)
        else list(urls)
    )
    failures = []
    for url in candidates:
        try:
            return await _connect_one(
                url.get_secret_value(), role=role, timeout=timeout, heartbeat=heartbeat, tls=tls
            )
        except BrokerUnreachableError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    raise BrokerUnreachableError(
        f"no broker of {len(failures)} answered: " + "; ".join(str(f) for f in failures)
    )


async def _connect_one(
    secret: str, *, role: str, timeout: float, heartbeat: int, tls: TlsSettings | None
) -> AbstractConnection:
    shown = redact_url(secret)
    context = tls_context(tls or TlsSettings()) if secret.lower().startswith("amqps:") else None
    # Tells the frame receiver aiormq builds during the connect the connection's heartbeat.
    heartbeat_set = frames.HEARTBEAT.set(heartbeat)
    try:
        return await asyncio.wait_for(
            aio_pika.connect(
                secret,
                client_properties={"connection_name": connection_name(role)},
                heartbeat=heartbeat,
                timeout=timeout,
                ssl_context=context,
            ),
            timeout=timeout,
        )
    except ProbableAuthenticationError:
        raise BrokerAuthError(
            f"broker at {shown} refused the login (user, password or virtual host)"
        ) from None
    except AMQPConnectionError as exc:
        text = redact_url(str(exc))
        if "ACCESS_REFUSED" in text or "NOT_ALLOWED" in text:
            raise BrokerAuthError(f"broker at {shown} refused the login: {text[:200]}") from None
        raise BrokerUnreachableError(f"cannot connect to {shown}: {text[:200]}") from None
    except AMQPError:
        # RabbitMQ closes the handshake with Connection.Close for an unknown virtual host
        raise BrokerAuthError(
            f"broker at {shown} closed the connection during the handshake "
            f"(unknown virtual host, or no access to it)"
        ) from None
    except TimeoutError:
        raise BrokerUnreachableError(
            f"cannot connect to {shown}: no answer within {timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerUnreachableError(
            f"TLS handshake with {shown} failed: {exc.reason or exc}"
        ) from None
    except (OSError, ConnectionError) as exc:
        reason = exc.strerror or type(exc).__name__
        raise BrokerUnreachableError(f"cannot connect to {shown}: {reason}") from None
    except ValueError:
        raise BrokerUnreachableError(f"malformed broker URL {shown}") from None
    finally:
        frames.HEARTBEAT.reset(heartbeat_set)
