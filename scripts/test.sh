#!/usr/bin/env bash
# Set everything up and run every check: ruff (format and lint), mypy --strict, then the whole
# test suite against a real RabbitMQ. Extra arguments go to pytest (e.g. -k retry, -m slow).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
say "ruff"
.venv/bin/ruff format --check eventworker tests examples benchmarks
.venv/bin/ruff check eventworker tests examples benchmarks
say "mypy --strict"
.venv/bin/mypy
say "pytest"
.venv/bin/pytest --cov=eventworker --cov-report=term-missing:skip-covered "$@"
