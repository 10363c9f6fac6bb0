"""``eventworker new plugin``: the package it writes installs, passes its own tests and is
found by ``eventworker handlers``; bad names and occupied folders are refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from eventworker.commands.new import FILES
from tests.support import venvs
from tests.support.cli import EVENTWORKER

ROOT = Path(__file__).resolve().parents[2]


def new(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTWORKER, "new", "plugin", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_the_plugin_installs_passes_its_own_tests_and_lists_its_handler(tmp_path: Path) -> None:
    created = new("acme-orders", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    plugin = tmp_path / "acme-orders"
    assert sorted(p.relative_to(plugin).as_posix() for p in plugin.rglob("*") if p.is_file()) == [
        "README.md",
        "acme_orders/__init__.py",
        "acme_orders/handlers.py",
        "conftest.py",
        "pyproject.toml",
        "tests/test_handlers.py",
    ]
    project = tomllib.loads((plugin / "pyproject.toml").read_text())
    assert project["project"]["name"] == "acme-orders"
    assert project["project"]["entry-points"]["eventworker.handlers"] == {
        "acme_orders": "acme_orders.handlers"
    }
    assert "Event[Greeting]" in (plugin / "acme_orders" / "handlers.py").read_text()

    bin_dir = venvs.create(tmp_path / "venv")
    env = venvs.env(bin_dir)

    def run(*command: str, cwd: Path = tmp_path) -> str:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        return done.stdout

    run("pip", "install", "-q", "-e", str(plugin))
    tested = run("pytest", "-q", "-p", "no:cacheprovider", cwd=plugin)
    assert "2 passed" in tested, tested
    listed = run("eventworker", "handlers")
    assert "acme_orders_greet  (plugin acme_orders, acme-orders 0.1.0)" in listed, listed
    assert "bindings:          acme_orders.greeting" in listed, listed
    # Installed in that environment alone, not in the one running this test.
    outside = subprocess.run(
        [EVENTWORKER, "handlers"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "acme_orders_greet" not in outside.stdout


def test_an_existing_empty_folder_given_with_dir_is_filled(tmp_path: Path) -> None:
    target = tmp_path / "services" / "orders"
    target.mkdir(parents=True)
    created = new("acme_orders", "--dir", str(target), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert (target / "acme_orders" / "handlers.py").is_file()
    assert 'name = "acme_orders"' in (target / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("1acme", "is not a Python identifier once dashes become underscores"),
        ("acme orders", "is not a Python identifier once dashes become underscores"),
        ("acme.orders", "is not a Python identifier once dashes become underscores"),
        ("class", "is not a Python identifier once dashes become underscores"),
        ("json", "would shadow the module json"),
        ("eventworker", "would shadow the module eventworker"),
    ],
)
def test_an_invalid_name_is_one_error_line_exit_5_and_nothing_written(
    tmp_path: Path, name: str, says: str
) -> None:
    refused = new(name, cwd=tmp_path)
    assert refused.returncode == 5
    assert refused.stderr.startswith(f"error: plugin name {name!r} {says}"), refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_empty_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "acme-orders"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    refused = new("acme-orders", cwd=tmp_path)
    assert refused.returncode == 5
    assert (
        refused.stderr
        == "error: acme-orders exists and is not empty; choose another --dir or remove it\n"
    )
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("")
    refused = new("acme-orders", "--dir", "file", cwd=tmp_path)
    assert (refused.returncode, refused.stderr) == (
        5,
        "error: file exists and is not a folder; choose another --dir\n",
    )


def test_without_a_name_it_is_a_usage_error(tmp_path: Path) -> None:
    assert new(cwd=tmp_path).returncode == 2


@pytest.mark.timeout(120)
def test_every_template_ships_in_the_wheel(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "eventworker", source / "eventworker", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("eventworker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    folder = ROOT / "eventworker" / "commands" / "templates" / "plugin"
    templates = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
    assert {template for template, _ in FILES} == templates
    assert {f"eventworker/commands/templates/plugin/{t}" for t in templates} <= names


def test_the_package_reads_its_templates_as_installed_resources() -> None:
    # importlib.resources, not a path next to the source: it works from a wheel or a zip too.
    code = "from eventworker.commands.new import render; print(sorted(render('x-y')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "x_y/handlers.py" in out.stdout


@pytest.mark.timeout(180)
def test_the_plugin_type_checks_under_mypy_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mypy import api

    from eventworker.commands.new import write

    plugin = tmp_path / "acme-orders"
    write("acme-orders", plugin)
    monkeypatch.setenv("MYPYPATH", str(plugin))
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--strict",
            "--no-error-summary",
            str(plugin / "acme_orders"),
            str(plugin / "tests" / "test_handlers.py"),
            str(plugin / "conftest.py"),
        ]
    )
    assert (status, out + err) == (0, "")
