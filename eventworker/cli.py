"""The ``eventworker`` command group; each command lives in ``eventworker.commands``."""

from __future__ import annotations

import click

from eventworker.commands.dlq import dlq
from eventworker.commands.dlq_replay import purge, replay
from eventworker.commands.handlers import list_handlers
from eventworker.commands.inbox import inbox
from eventworker.commands.outbox import outbox_group
from eventworker.commands.plugins import list_plugins
from eventworker.commands.publish import publish
from eventworker.commands.run import run
from eventworker.commands.serve import serve
from eventworker.commands.status import status
from eventworker.commands.topology import topology


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventworker", message="%(prog)s %(version)s")
def main() -> None:
    """Event-driven workers on RabbitMQ: handler plugins, broker-held retries, dead letters.

    Settings come from defaults < TOML file < EVENTWORKER_* environment < options.
    """


for command in (
    run,
    publish,
    status,
    list_handlers,
    list_plugins,
    dlq,
    topology,
    inbox,
    outbox_group,
    serve,
):
    main.add_command(command)
for command in (replay, purge):
    dlq.add_command(command)
