"""Plugin distributions written by a test: source files and ``*.dist-info`` metadata in a
directory of their own, for ``sys.path`` (in process) or ``PYTHONPATH`` (an ``eventworker``
subprocess)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path


def install(
    site: Path,
    *,
    distribution: str,
    entry_points: dict[str, str],
    files: dict[str, str],
) -> PathDistribution:
    """Write ``files`` (paths relative to ``site``; packages get an ``__init__.py``) and the
    metadata of ``distribution`` 1.0 with ``entry_points`` (group -> lines ``name = value``)."""
    site.mkdir(parents=True, exist_ok=True)
    for relative, source in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in Path(relative).parents:
            if parent != Path("."):
                (site / parent / "__init__.py").touch()
        path.write_text(source)
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n{lines}\n" for group, lines in entry_points.items())
    )
    return PathDistribution(info)


def entry_point(dist: PathDistribution, group: str, name: str) -> EntryPoint:
    return dist.entry_points.select(group=group)[name]
