"""The ``eventworker`` command group; each command lives in ``eventworker.commands``."""

from __future__ import annotations

import click

from eventworker.commands.dlq import dlq
from eventworker.commands.dlq_replay import purge, replay
from eventworker.commands.handlers import list_handlers
from eventworker.commands.publish import publish
from eventworker.commands.run import run
from eventworker.commands.topology import topology


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventworker", message="%(prog)s %(version)s")
def main() -> None:
    """Event-driven workers on RabbitMQ: handler plugins, broker-held retries, dead letters.

    Settings come from defaults < TOML file < EVENTWORKER_* environment < options.
    """


for command in (run, publish, list_handlers, dlq, topology):
    main.add_command(command)
for command in (replay, purge):
    dlq.add_command(command)
