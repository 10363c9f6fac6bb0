#!/usr/bin/env bash
# Set everything up and run every check: ruff (format and lint), mypy --strict, the import
# contracts (import-linter), the docs build, then the whole test suite against a real RabbitMQ,
# PostgreSQL and Redis (the inbox stores), AMQP clients of other ecosystems (the interop tests:
# kombu, amqplib, amqp-tools) and Chromium (the console's browser tests). Extra arguments go to
# pytest (-k retry, -m slow).
set -euo pipefail
# The tests use $EVENTWORKER_TEST_URL; make sure that is the broker the set-up checks.
export EVENTWORKER_TEST_URL="${EVENTWORKER_TEST_URL:-${EVENTWORKER_URL:-amqp://guest:guest@localhost:5672/}}"
export EVENTWORKER_URL="$EVENTWORKER_TEST_URL"
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ensure_inbox_stores
ensure_postgres_for_outbox
ensure_interop_clients
ensure_browser
say "ruff"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
say "mypy --strict"
.venv/bin/mypy
say "import-linter (the architecture contracts in pyproject.toml)"
.venv/bin/lint-imports --no-cache
say "docs (mkdocs build --strict)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
say "pytest"
.venv/bin/pytest --cov=eventworker --cov-report=term-missing:skip-covered "$@"
