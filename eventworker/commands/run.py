"""``eventworker run``: run the installed handlers until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from eventworker.commands import config_option, errors, examples, run_async, url_option
from eventworker.errors import ExitCode, InvalidInputError
from eventworker.settings import Settings, load_settings

if TYPE_CHECKING:
    from eventworker.worker.lifecycle import Worker


@examples(
    "eventworker run",
    "eventworker run --handler send_welcome_mail --concurrency 8 --metrics-port 9100",
    "EVENTWORKER_URL=amqp://app:secret@rabbit/ eventworker run --processes 2",
    "eventworker run --reload --log-level DEBUG",
)
@click.command()
@config_option
@url_option
@click.option(
    "--handler",
    "handler_names",
    multiple=True,
    metavar="NAME",
    help="Run only this handler (repeatable). Default: every enabled handler.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Messages each handler runs at once (unless the handler sets its own).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0, 65535),
    default=None,
    help="Messages the broker delivers ahead per handler; 0 = 2 x concurrency.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=None,
    help="Seconds running handlers get to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--log-level",
    type=click.Choice(["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Lowest level logged (default: log_level, INFO).",
)
@click.option(
    "--log-format",
    type=click.Choice(["pretty", "json"]),
    default=None,
    help="pretty lines for a terminal, or one JSON object per line (default: log_format).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics, /healthz and /readyz on this port; 0 = off (default: metrics_port).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes under one supervisor (default: processes, 1).",
)
@click.option(
    "--reload",
    is_flag=True,
    default=False,
    help="Development: restart the worker, draining it first, when a Python file of the "
    "plugins' sources or of the current directory changes (needs watchfiles, the dev extra).",
)
def run(
    config: str | None,
    url: str | None,
    handler_names: Sequence[str],
    concurrency: int | None,
    prefetch: int | None,
    grace: float | None,
    log_level: str | None,
    log_format: str | None,
    metrics_port: int | None,
    processes: int | None,
    reload: bool,
) -> None:
    """Run the installed handlers until SIGTERM or SIGINT.

    Declares the exchange, one queue per handler, the retry queues and the dead-letter
    queues; then consumes. On SIGTERM/SIGINT it stops consuming, lets running handlers finish
    within the grace period and exits 0; unfinished messages go back to the broker. A second
    signal stops at once (exit 130). With --metrics-port it serves Prometheus metrics and
    health endpoints. Runs on uvloop when it is installed (the "speed" extra).

    With --processes N it starts N such workers under a supervisor that forwards the signals,
    restarts a worker that died (with a growing pause) and exits 1 when one fails for good;
    worker i serves its endpoints on metrics port + i.

    With --reload (for development, off by default) it runs the worker as a child process and
    restarts it, after the same drain, whenever a Python file changes in the source folders
    of the installed plugins' modules or in the current directory.
    """
    from eventworker.observability import logs
    from eventworker.plugins import discovery
    from eventworker.plugins.schedules import gather

    if reload and not _have_watchfiles():
        click.echo(
            "error: --reload needs watchfiles, which is not installed "
            "(pip install 'eventworker[dev]')",
            err=True,
        )
        sys.exit(int(ExitCode.USAGE))
    with errors():
        settings = load_settings(
            config,
            url=url,
            concurrency=concurrency,
            prefetch=prefetch,
            grace=grace,
            log_level=log_level and log_level.upper(),
            log_format=log_format,
            metrics_port=metrics_port,
            handlers=tuple(handler_names) or None,
            processes=processes,
        )
        logs.configure(settings.log_level, format=settings.log_format)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        if not registrations:
            raise InvalidInputError(
                f"no handlers installed: no package registers any in the entry-point group "
                f"{discovery.GROUP!r}"
            )
        middleware = discovery.load_middleware(settings.middleware)
        schedules = gather(registrations, settings)
        if reload:
            # Plugins were checked above; the child imports them afresh at every restart.
            sys.exit(
                _reload(
                    [r.handler.module for r in registrations],
                    url=url,
                    options={
                        "--config": config,
                        "--concurrency": concurrency,
                        "--prefetch": prefetch,
                        "--grace": grace,
                        "--log-level": log_level,
                        "--log-format": log_format,
                        "--metrics-port": metrics_port,
                        "--processes": processes,
                    },
                    handler_names=handler_names,
                )
            )
        if settings.processes > 1:
            # Plugins were checked above, once, so a broken one fails here and not N times.
            sys.exit(_supervise(settings, config=config, url=url))
        # Not before: a supervisor holds no broker connection, so it never imports aio-pika.
        from eventworker.worker.lifecycle import Worker

        if settings.metrics_port:
            from eventworker.worker import health
            from eventworker.worker.metrics import Metrics

            metrics = Metrics()
            worker = Worker(
                registrations,
                settings,
                observers=[metrics],
                middleware=middleware,
                schedules=schedules,
            )
            run_async(
                _serve(
                    worker, health.run_worker(worker, metrics, settings, port=settings.metrics_port)
                )
            )
        else:
            worker = Worker(registrations, settings, middleware=middleware, schedules=schedules)
            run_async(_serve(worker, worker.run(handle_signals=True)))
    code = ExitCode.INTERRUPTED if worker.interrupted else ExitCode.OK
    if any(t.name.startswith("eventworker-handler") for t in threading.enumerate()):
        # A sync handler still runs in a thread; Python would wait for it at exit.
        sys.stderr.flush()
        os._exit(int(code))
    sys.exit(int(code))


async def _serve(worker: Worker, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; under ``run --processes``, as a child that follows its supervisor."""
    from eventworker.worker import supervisor

    parent = os.environ.get(supervisor.SUPERVISOR_ENV)
    if not parent:
        await main
        return
    worker.repeat_window = supervisor.REPEAT_WINDOW
    watch = asyncio.ensure_future(supervisor.watch_parent(int(parent), worker.stop))
    try:
        await main
    finally:
        watch.cancel()


def _have_watchfiles() -> bool:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return False
    return True


def _reload(
    modules: Sequence[str],
    *,
    url: str | None,
    options: Mapping[str, object],
    handler_names: Sequence[str],
) -> int:
    """Run ``eventworker run`` with the options given here (the URL through the environment,
    never on a command line ``ps`` shows) as a child, restarted when the sources change."""
    from eventworker.worker.reloader import Reloader, source_paths
    from eventworker.worker.supervisor import ChildSpec

    env = dict(os.environ)
    if url is not None:
        env["EVENTWORKER_URL"] = url
    argv = [sys.executable, "-m", "eventworker", "run"]
    argv += [f"{name}={value}" for name, value in options.items() if value is not None]
    for name in handler_names:
        argv += ["--handler", name]
    return asyncio.run(Reloader(ChildSpec(0, argv, env), source_paths(modules)).run())


def _supervise(settings: Settings, *, config: str | None, url: str | None) -> int:
    """Run ``settings.processes`` children, each ``eventworker run --processes 1`` with these
    settings (the URL through the environment, never on a command line ``ps`` shows)."""
    from eventworker.worker.supervisor import ChildSpec, Supervisor

    env = dict(os.environ)
    if url is not None:
        env["EVENTWORKER_URL"] = url
    base = [sys.executable, "-m", "eventworker", "run", "--processes", "1"]
    if config is not None:
        base += ["--config", config]
    for name in settings.handlers:
        base += ["--handler", name]
    base += [
        f"--concurrency={settings.concurrency}",
        f"--prefetch={settings.prefetch}",
        f"--grace={settings.grace}",
        f"--log-level={settings.log_level}",
        f"--log-format={settings.log_format}",
    ]
    specs = [
        ChildSpec(
            index,
            [
                *base,
                f"--metrics-port={settings.metrics_port + index if settings.metrics_port else 0}",
            ],
            env,
        )
        for index in range(settings.processes)
    ]
    return asyncio.run(Supervisor(specs).run())
