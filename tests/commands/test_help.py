"""``eventworker --help`` stays fast: the group lists its commands without importing them."""

from __future__ import annotations

import subprocess
import sys

import click

from eventworker.cli import COMMANDS, main


def test_the_stored_short_help_is_what_the_commands_say() -> None:
    ctx = click.Context(main)
    loaded = click.Group(
        main.name,
        commands={name: main.get_command(ctx, name) for name in COMMANDS},  # type: ignore[misc]
        help=main.help,
        params=main.params,
        context_settings=main.context_settings,
    )
    assert main.get_help(ctx) == loaded.get_help(click.Context(loaded))


def test_help_imports_no_command_module_nor_the_broker_client() -> None:
    code = (
        "import sys\n"
        "from eventworker.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in sys.modules if m.startswith(('eventworker.commands.', 'aio_pika',"
        " 'pydantic_settings'))]\n"
        "sys.exit(repr(heavy) if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
