"""Separate virtualenvs under ``benchmarks/.venvs/`` for what must not enter the project's own:
the peers (FastStream, Dramatiq) and uvloop for the raw aio-pika ceiling.

Each is created once with pip and reused while its requirements stay the same; one that does not
install is skipped with the reason, never fatal to the run.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".venvs"
#: Seconds pip may take to install one virtualenv's requirements.
PIP_TIMEOUT = 600


def requirements(name: str) -> list[str]:
    """What each virtualenv holds. The uvloop one pins the project's aio-pika and aiormq, so
    the raw baseline differs from the project's in the event loop only."""
    match name:
        case "faststream":
            return ["faststream[rabbit]"]
        case "dramatiq":
            return ["dramatiq[rabbitmq]"]
        case "uvloop":
            return [f"aio-pika=={version('aio-pika')}", f"aiormq=={version('aiormq')}", "uvloop"]
    raise ValueError(f"no virtualenv named {name!r}")


@dataclass(frozen=True, slots=True)
class Venv:
    """A ready virtualenv (``python`` set) or why it is not (``problem`` set)."""

    name: str
    python: Path | None = None
    packages: dict[str, str] | None = None
    problem: str = ""


def ensure(name: str) -> Venv:
    """The virtualenv ``name``, created and installed on first use."""
    wanted = requirements(name)
    home = ROOT / name
    python = home / "bin" / "python"
    marker = home / "bench-requirements.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(wanted)):
        print(f"setting up virtualenv {home} ({' '.join(wanted)}) ...", file=sys.stderr)
        try:
            venv.EnvBuilder(clear=True, with_pip=True).create(home)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
                check=True,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
            )
        except subprocess.CalledProcessError as exc:
            tail = " ".join((exc.stderr or exc.stdout or "").split()[-30:])
            return Venv(name, problem=f"pip install {' '.join(wanted)} failed: {tail}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Venv(name, problem=f"cannot create {home}: {exc}")
        marker.write_text("\n".join(wanted))
    return Venv(name, python=python, packages=_packages(python))


def _packages(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line)
