#!/usr/bin/env bash
# From a fresh clone: set up .venv and make sure a RabbitMQ answers (scripts/bootstrap.sh, as
# the demo and the tests do), then run the benchmark suite with any options of
# `python -m benchmarks` (--quick, --runs N, --only NAME..., --no-peers). See docs/performance.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/bootstrap.sh"
say "benchmarks (python -m benchmarks $*)"
exec .venv/bin/python -m benchmarks --url "$EVENTWORKER_URL" "$@"
