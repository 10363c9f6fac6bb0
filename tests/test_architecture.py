"""The package's shape beyond what import-linter checks (pyproject.toml): every module says what
it holds, and ``__all__`` is the public API exactly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import eventworker

PACKAGE = Path(eventworker.__file__).parent

#: Dotted module names below the package: ``worker.dispatch``, ``inbox.stores`` (a package).
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_opens_with_a_line_saying_what_it_holds(module: str) -> None:
    """The layers and boundaries are import-linter's (pyproject.toml); the opening lines are
    what a newcomer reads in the tree."""
    path = PACKAGE / module.replace(".", "/")
    source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and docstring.splitlines()[0].strip(), f"{module} has no opening line"


def test_the_public_names_are_sorted_in_all() -> None:
    assert eventworker.__all__ == sorted(eventworker.__all__)


def test_every_name_in_all_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from eventworker import *", namespace)  # raises AttributeError for a missing name
    assert set(eventworker.__all__) <= set(namespace)


def test_all_lists_every_public_name_the_package_exports() -> None:
    exported = {
        name
        for name, value in vars(eventworker).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    # The lazy names (PEP 562 __getattr__) appear on first use only.
    assert exported | set(eventworker._LAZY) == set(eventworker.__all__)


def test_importing_the_package_does_not_import_aio_pika() -> None:
    code = "import sys, eventworker; sys.exit('aio_pika' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_all_has_no_duplicates() -> None:
    assert len(eventworker.__all__) == len(set(eventworker.__all__))
