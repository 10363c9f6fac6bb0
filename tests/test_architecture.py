"""The package's shape: imports point down the layer table, foreign libraries stay at their
boundaries, and ``__all__`` is the public API exactly."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import eventworker

PACKAGE = Path(eventworker.__file__).parent

#: Each module of eventworker and its layer; a module imports only from strictly lower layers.
LAYERS = {
    "errors": 0,
    "amqp": 0,
    "amqp._fields": 0,
    "amqp._encoding": 0,
    "amqp.properties": 1,
    "amqp.frames": 2,
    "amqp.delivery": 3,
    "supervisor": 1,
    "settings": 1,
    "envelope": 1,
    "tracing": 1,
    "routing": 1,
    "handlers": 2,
    "idempotency": 2,
    "inbox": 3,
    "inbox_memory": 3,
    "inbox_redis": 3,
    "inbox_sql": 3,
    "inbox_sqlite": 4,
    "inbox_postgres": 4,
    "inbox_stores": 5,
    "outbox": 2,
    "retry": 3,
    "registry": 3,
    "topology": 3,
    "connection": 3,
    "logs": 3,
    "outbox_store": 3,
    "bindings": 3,
    "publisher": 4,
    "routes": 4,
    "stats": 4,
    "acks": 4,
    "diagnosis": 4,
    "consumer": 5,
    "parked": 4,
    "producer": 5,
    "dispatch": 5,
    "banner": 5,
    "queue_reader": 4,
    "dlq": 5,
    "drift": 5,
    "unrouted": 5,
    "worker": 6,
    "metrics": 6,
    "blocking": 6,
    "ingress": 6,
    "relay": 6,
    "health": 7,
    "__init__": 7,
    "commands": 7,
    "commands.progress": 7,
    "testing": 7,
    "commands.parking": 7,
    "commands.handlers": 8,
    "commands.outbox": 8,
    "commands.plugins": 8,
    "commands.inbox": 8,
    "commands.publish": 8,
    "commands.run": 8,
    "commands.status": 8,
    "commands.serve": 8,
    "commands.dlq": 8,
    "commands.dlq_replay": 8,
    "commands.topology": 8,
    "cli": 9,
    "__main__": 9,
}
#: Same-layer imports that are the module's whole purpose: ``python -m eventworker`` runs the CLI.
ALLOWED = {("__main__", "cli")}
#: The modules that speak AMQP (aio-pika, and aiormq beneath it).
AMQP = {
    "amqp.frames",
    "amqp.delivery",
    "acks",
    "diagnosis",
    "connection",
    "topology",
    "publisher",
    "consumer",
    "dispatch",
    "dlq",
    "queue_reader",
    "drift",
    "unrouted",
    "worker",
}
#: Third-party packages and the only modules that may import them.
BOUNDARIES = {
    "aio_pika": AMQP | {"stats", "producer", "testing"},
    "aiormq": AMQP | {"stats"},
    "click": {
        "cli",
        "commands",
        "commands.handlers",
        "commands.inbox",
        "commands.outbox",
        "commands.plugins",
        "commands.progress",
        "commands.publish",
        "commands.run",
        "commands.serve",
        "commands.status",
        "commands.dlq",
        "commands.dlq_replay",
        "commands.parking",
        "commands.topology",
    },
    "prometheus_client": {"metrics"},
    "aiohttp": {"health"},
    "opentelemetry": {"tracing"},
    "aiosqlite": {"inbox_sqlite"},
    "sqlite3": {"inbox_sqlite", "outbox_store", "commands.outbox"},
    "asyncpg": {"inbox_postgres", "outbox_store", "commands.outbox"},
    "redis": {"inbox_redis"},
    "uvloop": {"commands"},
    "sqlalchemy": {"outbox"},
    "fastapi": {"ingress"},
    "starlette": {"ingress"},
    "pamqp": {"amqp.properties", "amqp.frames"},
    "importlib.metadata": {"registry"},
    "importlib_metadata": {"registry"},
}
#: Dotted module names below the package: ``worker``, ``commands`` (a package), ``commands.run``.
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


def _path(module: str) -> Path:
    candidate = PACKAGE / f"{module.replace('.', '/')}.py"
    return candidate if candidate.exists() else PACKAGE / module.replace(".", "/") / "__init__.py"


def _imports(module: str) -> set[str]:
    """Every module ``module`` imports, anywhere in its source, as absolute dotted names.

    ``from eventworker import x`` counts as ``eventworker.x`` when x is a submodule and as the
    package itself (``eventworker.__init__``) otherwise.
    """
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "eventworker" + (f".{base}" if base else "")
            if base == "eventworker":
                found.update(
                    f"eventworker.{a.name}" if a.name in MODULES else "eventworker.__init__"
                    for a in node.names
                )
            elif base == "importlib":
                found.update(f"importlib.{a.name}" for a in node.names)
            else:
                found.add(base)
    return found


def _internal(module: str) -> set[str]:
    """The eventworker modules ``module`` imports (``__init__`` for the package itself)."""
    imports = _imports(module)
    return {
        name.removeprefix("eventworker.") for name in imports if name.startswith("eventworker.")
    } | ({"__init__"} if "eventworker" in imports else set())


def test_every_module_of_the_package_has_a_layer() -> None:
    assert set(MODULES) == set(LAYERS)


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_from_lower_layers(module: str) -> None:
    upward = sorted(
        f"{module} (L{LAYERS[module]}) imports {other} (L{LAYERS[other]})"
        for other in _internal(module) - {module}
        if LAYERS[other] >= LAYERS[module] and (module, other) not in ALLOWED
    )
    assert upward == []


def test_the_package_init_never_imports_the_cli() -> None:
    assert "cli" not in _internal("__init__")


@pytest.mark.parametrize("module", MODULES)
def test_foreign_libraries_are_imported_only_at_their_boundaries(module: str) -> None:
    misplaced = sorted(
        name
        for name in _imports(module)
        for library, allowed in BOUNDARIES.items()
        if (name == library or name.startswith(f"{library}.")) and module not in allowed
    )
    assert misplaced == []


def test_the_import_scanner_sees_imports_inside_functions() -> None:
    # run imports the registry only inside the command, to keep --help fast.
    assert "registry" in _internal("commands.run")


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


def test_the_layer_table_in_the_docs_is_this_one() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    documented = {
        module: int(layer)
        for layer, cell in re.findall(r"^\| L(\d) \| (.+) \|$", page, re.MULTILINE)
        for module in re.findall(r"`([\w.]+)`(?: \([^)]*\))?(?:,|$)", cell)
    }
    assert documented == LAYERS
