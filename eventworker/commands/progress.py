"""Progress of a long CLI operation: a bar on a terminal, nothing at all otherwise.

Output read by a script or a log collector stays free of bar redraws; a person at a terminal
sees how far a big ``publish --file`` (or a replay) has come.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

#: Redraws at most this many times over a whole run: a bar per event would slow big files.
REDRAWS = 200


def bar_drawn(total: int) -> bool:
    """Whether :func:`progress` draws a bar for ``total`` steps (stderr a terminal)."""
    return total >= 2 and sys.stderr.isatty()


@contextmanager
def progress(total: int, *, label: str) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; draws a bar on stderr only when stderr is a terminal and there
    is more than one step."""
    if not bar_drawn(total):
        yield lambda _: None
        return
    with click.progressbar(
        length=total,
        label=label,
        file=sys.stderr,
        show_pos=True,
        update_min_steps=max(1, total // REDRAWS),
    ) as bar:
        yield bar.update
