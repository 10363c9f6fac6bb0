"""A fresh virtual environment that sees this one's packages, made in a second and without the
network: an author's environment with eventworker installed, for plugins a test pip-installs."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

#: Commands the environment's ``bin`` gets, each running the module of that name with its Python.
COMMANDS = ("pip", "pytest", "eventworker")


def create(path: Path) -> Path:
    """A virtual environment at ``path`` whose Python also imports this one's packages (a
    ``.pth`` adds them after its own), with ``pip``, ``pytest`` and ``eventworker`` in its
    ``bin``; returns that ``bin``. What is pip-installed in it stays in it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    [own] = path.glob("lib/python*/site-packages")
    # site.addsitedir, not a bare path line: this environment's own .pth files (editable
    # installs of eventworker and the example plugin) must run too.
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (own / "_outer_environment.pth").write_text("\n".join(lines) + "\n")
    bin_dir = path / "bin"
    for command in COMMANDS:
        script = bin_dir / command
        script.write_text(f'#!/bin/sh\nexec "{bin_dir / "python"}" -m {command} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell with the virtual environment at ``bin_dir`` activated; pip
    installs no dependencies (they are all there already, from this environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTWORKER_", "PIP_"))}
    base.pop("PYTHONPATH", None)
    return {
        **base,
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",
        "VIRTUAL_ENV": str(bin_dir.parent),
        "PIP_NO_DEPS": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }
