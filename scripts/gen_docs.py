"""Generate the reference parts of the docs from the code, so they cannot drift.

- docs/configuration.md: the settings table, from the ``Settings`` model (names, environment
  variables, defaults), the click commands (which option sets what) and the comments of
  config.example.toml (the meaning; tests/test_config_example.py ties that file to the model).
- docs/cli.md: every command's usage, help and options, from click.

Each is written between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``.
``python scripts/gen_docs.py`` rewrites the pages; ``--check`` exits 1 when they are stale
(tests/test_docs.py runs that).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, SecretStr

from eventworker.cli import main as cli
from eventworker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
#: Option names that set a setting of another name.
ALIASES = {"timeout": "publish_timeout", "handler_names": "handlers"}
#: The settings section a command's options fall in before the top level.
SECTIONS = {"outbox": "outbox", "serve": "http", "deploy": "kubernetes", "console": "console"}


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} ")
        else:
            found.append((path, command))
    return found


def _meanings() -> dict[str, str]:
    """The comment block above each key of config.example.toml, minus its Env/Default lines."""
    meanings: dict[str, str] = {}
    section, block, last = "", [], ""
    for raw in EXAMPLE.read_text().splitlines():
        line = raw.strip()
        heading = re.match(r"^\[([a-z_]+)\]$", line)
        key = re.match(r"^#? ?([a-z_]+) = ", line)
        if heading:
            section = heading.group(1)
            if block:
                meanings[section] = " ".join(block)
            block, last = [], ""
        elif key:
            name = f"{section}.{key.group(1)}" if section else key.group(1)
            last = " ".join(block) or last
            meanings.setdefault(name, last)
            block = []
        elif line.startswith("#"):
            text = line.lstrip("# ").strip()
            if text.startswith("Env:") or (block and block[-1] is _STOP):
                block.append(_STOP)
            elif text and not text.startswith("Example"):
                block.append(text)
        else:
            block = []
    return {k: v.replace(_STOP, "").strip() for k, v in meanings.items()}


_STOP = "\0"


def _options() -> dict[str, list[str]]:
    """Setting path -> the options that set it, as ``command --option``."""
    fields = _fields()
    found: dict[str, list[str]] = {}
    for path, command in _commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name is None:
                continue
            name = ALIASES.get(param.name, param.name)
            section = SECTIONS.get(path.split()[0])
            for candidate in ([f"{section}.{name}"] if section else []) + [name]:
                if candidate in fields:
                    found.setdefault(candidate, []).append(f"{path} {param.opts[0]}")
                    break
    return found


def _fields() -> dict[str, Any]:
    """Setting path -> default; nested models flattened as ``section.field``."""
    result: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            for sub, sub_info in type(default).model_fields.items():
                result[f"{name}.{sub}"] = sub_info.get_default(call_default_factory=True)
        elif isinstance(default, dict):
            result[f"{name}.<name>"] = default
        else:
            result[name] = default
    return result


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return f"`{value.get_secret_value()}`"
    if isinstance(value, tuple | list):
        return f"`{list(value)}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _escape(text: str) -> str:
    """Plain text safe in a Markdown table: no HTML tags, no cell breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def settings_table() -> str:
    meanings, options = _meanings(), _options()
    rows = [
        "| Setting | Environment | Option | Default | Meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path, default in _fields().items():
        env = "EVENTWORKER_" + path.replace(".<name>", "").replace(".", "__").upper()
        meaning = _escape(meanings.get(path.removesuffix(".<name>"), ""))
        opts = ", ".join(f"`{o}`" for o in options.get(path, []))
        rows.append(f"| `{path}` | `{env}` | {opts} | {_show(default)} | {meaning} |")
    return "\n".join(rows)


def cli_reference() -> str:
    parts = []
    for path, command in _commands(cli):
        ctx = click.Context(command, info_name=f"eventworker {path}")
        parts.append(f"### `eventworker {path}`\n")
        parts.append(f"```\n{command.get_usage(ctx)}\n```\n")
        parts.append(f"{_escape(inspect.cleandoc(command.help or ''))}\n")
        rows = ["| Option | Meaning |", "| --- | --- |"]
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                rows.append(f"| `{record[0].replace('|', '/')}` | {_escape(record[1])} |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts).rstrip()


PAGES = {
    ROOT / "docs" / "configuration.md": ("settings", settings_table),
    ROOT / "docs" / "cli.md": ("commands", cli_reference),
}


def render(text: str, name: str, body: str) -> str:
    """``text`` with the generated region ``name`` replaced by ``body``.

    Raises:
        ValueError: the page lacks the markers.
    """
    pattern = re.compile(
        rf"(<!-- BEGIN GENERATED: {name} [^\n]*?-->)\n.*?(<!-- END GENERATED: {name} -->)", re.S
    )
    if not pattern.search(text):
        raise ValueError(f"no <!-- BEGIN/END GENERATED: {name} --> markers")
    return pattern.sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}", text)


def main(argv: list[str]) -> int:
    stale = []
    for page, (name, make) in PAGES.items():
        text = page.read_text()
        fresh = render(text, name, make())
        if fresh != text:
            stale.append(page.relative_to(ROOT))
            if "--check" not in argv:
                page.write_text(fresh)
    if stale and "--check" in argv:
        print(f"stale: {', '.join(map(str, stale))}; run python scripts/gen_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
