"""``python -m eventworker``: the same as the ``eventworker`` command, minus the working directory
on ``sys.path``."""

import os
import sys


def _drop_working_directory(path: list[str]) -> None:
    """Remove the working directory Python put first on ``path`` for ``-m`` (or ``""``).

    Plugins are imported by module name; with the working directory first, a package there
    named like a plugin's module (or like a library eventworker imports) would run in its
    place. Only installed code may run, so the entry goes before anything else is imported.
    An entry that ``PYTHONPATH`` or a ``.pth`` file adds later is the operator's choice and
    stays.
    """
    if sys.flags.safe_path or not path:  # -P or PYTHONSAFEPATH: Python added nothing
        return
    first = path[0]
    try:
        here = os.path.realpath(os.getcwd())
    except OSError:  # the working directory was removed: nothing of it to import
        here = None
    if first in ("", ".") or (here is not None and os.path.realpath(first) == here):
        del path[0]


if __name__ == "__main__":
    _drop_working_directory(sys.path)

    from eventworker.cli import main

    main()
