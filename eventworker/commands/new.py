"""``eventworker new plugin``: a handler plugin package written from the templates in
``eventworker/commands/templates/plugin``."""

from __future__ import annotations

import keyword
import shlex
import string
import sys
from importlib import resources
from pathlib import Path

import click

from eventworker.commands import errors, examples
from eventworker.errors import InvalidInputError

#: Each file written: its template, its path in the new folder (``$package`` substituted).
FILES = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("README.md.tmpl", "README.md"),
    ("package_init.py.tmpl", "$package/__init__.py"),
    ("handlers.py.tmpl", "$package/handlers.py"),
    ("conftest.py.tmpl", "conftest.py"),
    ("test_handlers.py.tmpl", "tests/test_handlers.py"),
)


def package_name(name: str) -> str:
    """The import name of plugin ``name``: dashes become underscores.

    Raises:
        InvalidInputError: the result is not a Python identifier, is a keyword, or would
            shadow eventworker or a module of the standard library.
    """
    package = name.replace("-", "_")
    if not package.isidentifier() or keyword.iskeyword(package) or not package.isascii():
        raise InvalidInputError(
            f"plugin name {name!r} is not a Python identifier once dashes become underscores; "
            f"use letters, digits, '_' and '-', starting with a letter (e.g. acme-orders)"
        )
    if package == "eventworker" or package in sys.stdlib_module_names:
        raise InvalidInputError(
            f"plugin name {name!r} would shadow the module {package}; choose another"
        )
    return package


def render(name: str) -> dict[str, str]:
    """Relative path -> content of every file of plugin ``name``.

    Raises:
        InvalidInputError: ``name`` is not a valid plugin name.
    """
    package = package_name(name)
    values = {"distribution": name, "package": package}
    folder = resources.files("eventworker.commands") / "templates" / "plugin"
    return {
        string.Template(path).substitute(values): string.Template(
            (folder / template).read_text(encoding="utf-8")
        ).substitute(values)
        for template, path in FILES
    }


def write(name: str, target: Path) -> list[Path]:
    """Write plugin ``name`` into ``target`` (created; an empty folder is fine); returns the
    files written.

    Raises:
        InvalidInputError: an invalid name, or ``target`` exists and is not an empty folder.
    """
    files = render(name)
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target} exists and is not a folder; choose another --dir")
    if target.is_dir() and any(target.iterdir()):
        raise InvalidInputError(
            f"{target} exists and is not empty; choose another --dir or remove it"
        )
    written = []
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


@click.group("new")
def new() -> None:
    """Create a project from a template: a handler plugin package."""


@examples(
    "eventworker new plugin acme-orders",
    "eventworker new plugin acme-orders --dir services/orders-handlers",
)
@new.command("plugin")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="The folder to write, new or empty. Default: ./NAME.",
)
def plugin(name: str, directory: Path | None) -> None:
    """Write a handler plugin package NAME: a pyproject.toml with its eventworker.handlers entry
    point, a handlers module with one handler and its pydantic model, tests using
    eventworker.testing, and a README.

    NAME is the distribution's name (acme-orders); its package takes dashes as underscores
    (acme_orders) and must then be a Python identifier. Nothing is written when NAME is
    invalid or the folder exists and is not empty (exit 5).
    """
    target = directory if directory is not None else Path(name)
    with errors():
        written = write(name, target)
    package = package_name(name)
    click.echo(f"created plugin {name} (package {package}) in {target}:")
    for path in written:
        click.echo(f"  {path}")
    folder = shlex.quote(str(target))
    click.echo(
        f"next: pip install -e {folder}; pytest {folder}; eventworker handlers "
        f"(handler {package}_greet, binding key {package}.greeting)"
    )
