"""``python -m eventworker``: the same as the ``eventworker`` command."""

from eventworker.cli import main

if __name__ == "__main__":
    main()
