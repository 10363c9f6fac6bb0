"""The commands of the ``eventworker`` CLI, one module each, and what they share.

Heavy imports (aio-pika, the worker) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from eventworker.errors import EventworkerError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
C = TypeVar("C", bound=click.Command)


def examples(*lines: str) -> Callable[[C], C]:
    """Put an "Examples" section at the end of a command's ``--help``, each line as written
    (click rewraps an epilog unless a paragraph starts with ``\\b``)."""

    def add(command: C) -> C:
        command.epilog = "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
        return command

    return add


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML settings file. Default: $EVENTWORKER_CONFIG, else ./eventworker.toml "
        "if present.",
    )(func)


def url_option(func: F) -> F:
    return click.option(
        "--url",
        default=None,
        help="Broker URL, amqp://user:password@host:port/vhost. Prefer $EVENTWORKER_URL: "
        "other users can read the command line.",
    )(func)


@contextmanager
def errors() -> Iterator[None]:
    """Every eventworker error becomes one line on stderr and its exit code."""
    try:
        yield
    except EventworkerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exc.exit_code))


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (``eventworker[speed]``): its event loop and
    socket writes cost less CPU per message than asyncio's; else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def serve_until_signal(server: Any, where: str) -> None:
    """Run a uvicorn ``server`` until SIGTERM/SIGINT.

    uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the
    handler that was there before: a no-op one makes a clean stop exit 0, like `run`.

    Raises:
        EventworkerError: the server could not start (uvicorn logged why).
    """
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(server.serve())
    if not server.started:
        raise EventworkerError(f"could not serve on {where} (see above)")
