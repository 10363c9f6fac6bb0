"""mypy --strict on the typing checks of ``@handler``: the accepted handlers type-check, and
each refused one fails with the error its ``type: ignore[...]`` names, no more, no less (an
ignore that is not needed is itself an error under --strict)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def mypy(*files: Path) -> tuple[str, int]:
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--strict",
            "--warn-unused-ignores",
            "--no-error-summary",
            "--show-error-codes",
            *map(str, files),
        ]
    )
    return out + err, status


@pytest.mark.timeout(180)
def test_accepted_and_refused_handlers_type_check_as_marked() -> None:
    out, status = mypy(HERE / "handlers_accepted.py", HERE / "handlers_refused.py")
    assert (status, out) == (0, "")


@pytest.mark.timeout(180)
def test_every_refused_handler_is_an_error_of_its_marked_code(tmp_path: Path) -> None:
    source = (HERE / "handlers_refused.py").read_text()
    marked = {
        number: line.split("# type: ignore[")[1].rstrip("]")
        for number, line in enumerate(source.splitlines(), 1)
        if "# type: ignore[" in line
    }
    stripped = tmp_path / "refused.py"
    stripped.write_text(source.replace("# type: ignore", "# was"))
    out, status = mypy(stripped)
    found = {
        int(line.split(":")[1]): line.rsplit("[", 1)[1].rstrip("]")
        for line in out.splitlines()
        if ": error: " in line
    }
    assert status == 1
    assert found == marked, out
