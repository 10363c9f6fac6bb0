"""The ``eventworker`` command group; each command lives in ``eventworker.commands``.

The commands are imported only when one runs (or shows its own help): they pull in aio-pika,
pydantic-settings and the rest, a few hundred milliseconds that ``eventworker --help`` need
not pay. The group's help lists the short help kept in ``COMMANDS``; a test checks it against
the commands' own.
"""

from __future__ import annotations

import importlib
import re

import click

#: Each command: its module under ``eventworker.commands``, its object there, its short help
#: (the first sentence of its help, whole: a summary cut with "..." tells nothing).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "asyncapi": (
        "asyncapi",
        "asyncapi",
        "Write an AsyncAPI 3.0 document of the installed handlers: the exchange, each handler's "
        "channel and operation, and the events they publish.",
    ),
    "console": (
        "console",
        "console",
        "Serve the operator console: handlers, backlogs, dead letters with their diagnosis, "
        "replay and purge, and the event catalogue, as web pages.",
    ),
    "deploy": (
        "deploy",
        "deploy",
        "Render deployment manifests from the handlers and settings `eventworker run` would use.",
    ),
    "dlq": (
        "dlq",
        "dlq",
        "Dead letters: list, show, replay, purge and export them.",
    ),
    "handlers": (
        "handlers",
        "list_handlers",
        "List every discovered handler: plugin, distribution, bindings, queues, retry policy, "
        "idempotent or not.",
    ),
    "inbox": (
        "inbox",
        "inbox",
        "Look into and clean the inbox of idempotent handlers (the inbox.url setting).",
    ),
    "new": (
        "new",
        "new",
        "Create a project from a template: a handler plugin package.",
    ),
    "outbox": (
        "outbox",
        "outbox_group",
        "The transactional outbox: events written in the application's own transaction, then "
        "published by a relay with confirms.",
    ),
    "plugins": (
        "plugins",
        "list_plugins",
        "List the entry points of the eventworker.handlers group without importing them.",
    ),
    "publish": (
        "publish",
        "publish",
        "Publish events to the topic exchange with ROUTING_KEY, each confirmed by the broker.",
    ),
    "run": (
        "run",
        "run",
        "Run the installed handlers until SIGTERM or SIGINT.",
    ),
    "schedules": (
        "schedules",
        "schedules",
        "List every periodic event (the installed plugins' and [[schedules]]): cron, timezone, "
        "routing key, where it is declared, its next ticks, and the worker that emits them now.",
    ),
    "serve": (
        "serve",
        "serve",
        "Serve the HTTP ingress until SIGTERM/SIGINT.",
    ),
    "status": (
        "status",
        "status",
        "Show each handler's queue depth, consumers, retry-tier depths and dead letters.",
    ),
    "topology": (
        "topology",
        "topology",
        "Compare the topology the installed handlers need with the broker, and fix what can be.",
    ),
}
#: Subcommands that live in a module of their own: (group, module, object).
SUBCOMMANDS = (("dlq", "dlq_replay", "replay"), ("dlq", "dlq_replay", "purge"))


class LazyGroup(click.Group):
    """A group that imports a command's module when that command is looked up to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command: click.Command = getattr(_module(entry[0]), entry[1])
        if isinstance(command, click.Group):
            for group, module, name in SUBCOMMANDS:
                if group == cmd_name and name not in command.commands:
                    command.add_command(getattr(_module(module), name))
        _summarise(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The stored short help: listing the commands must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])


def _summarise(command: click.Command) -> None:
    """Give ``command`` and its subcommands their first sentence, whole, as short help (click
    cuts a summary it makes itself to the terminal's width with "...")."""
    if command.short_help is None and command.help:
        paragraph = " ".join(command.help.split("\n\n")[0].split())
        sentence = re.match(r"(.+?\.)(\s|$)", paragraph)
        command.short_help = sentence.group(1) if sentence else paragraph
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _summarise(sub)


def _module(name: str) -> object:
    return importlib.import_module(f"eventworker.commands.{name}")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventworker", message="%(prog)s %(version)s")
def main() -> None:
    """Event-driven workers on RabbitMQ: handler plugins, broker-held retries, dead letters.

    Settings come from defaults < TOML file < EVENTWORKER_* environment < options.
    """
