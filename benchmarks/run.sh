#!/usr/bin/env bash
# From a fresh clone: set up .venv and make sure a RabbitMQ answers (scripts/bootstrap.sh, as
# the demo and the tests do), then run the benchmark suite with any options of
# `python -m benchmarks` (--quick, --runs N, --only NAME..., --no-peers). See docs/performance.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/bootstrap.sh"
# The features group's inbox cases need PostgreSQL and Redis (started as for the tests).
ensure_inbox_stores
export EVENTWORKER_BENCH_PG_DSN="${EVENTWORKER_BENCH_PG_DSN:-$EVENTWORKER_TEST_POSTGRES_URL}"
export EVENTWORKER_BENCH_REDIS_URL="${EVENTWORKER_BENCH_REDIS_URL:-$EVENTWORKER_TEST_REDIS_URL}"
say "benchmarks (python -m benchmarks $*)"
exec .venv/bin/python -m benchmarks --url "$EVENTWORKER_URL" "$@"
