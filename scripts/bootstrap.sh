#!/usr/bin/env bash
# Sourced by scripts/demo.sh and scripts/test.sh: makes .venv, installs the project and the
# example plugin, and makes sure a RabbitMQ answers at $EVENTWORKER_URL (default localhost).
# Order: the one at the URL if it answers; else a local rabbitmq-server if installed; else
# install it from the OS packages when root; else `docker compose up -d`; else stop and say how.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export EVENTWORKER_URL="${EVENTWORKER_URL:-amqp://guest:guest@localhost:5672/}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  say "Python 3.11 or newer is needed (apt-get install python3 python3-venv)"; return 1
}

setup_venv() {
  if [ ! -x .venv/bin/python ]; then
    local py; py="$(pick_python)"
    say "creating .venv with $py"
    if ! "$py" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing python3-venv from the OS packages"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$py" -m venv .venv
      else
        say "the Python venv module is missing: sudo apt-get install python3-venv"; return 1
      fi
    fi
  fi
  # A stamp of the package metadata: skip pip when nothing changed since the last install.
  local stamp=.venv/.eventworker-installed
  local want; want="$(cat pyproject.toml examples/plugin/pyproject.toml | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing eventworker, the example plugin and the test tools into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet -e ".[test]" -e examples/plugin
    echo "$want" > "$stamp"
  fi
}

broker_answers() {
  .venv/bin/python - "$EVENTWORKER_URL" <<'PY'
import socket, sys
from urllib.parse import urlsplit
try:
    u = urlsplit(sys.argv[1])
    port = u.port or (5671 if u.scheme == "amqps" else 5672)
    socket.create_connection((u.hostname or "localhost", port), timeout=2).close()
except Exception:
    sys.exit(1)
PY
}

wait_for_broker() {
  for _ in $(seq 1 60); do broker_answers && return 0; sleep 1; done
  return 1
}

ensure_rabbitmq() {
  broker_answers && return 0
  say "no RabbitMQ answers at the configured URL; trying to start one"
  if ! command -v rabbitmq-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing rabbitmq-server from the OS packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if command -v rabbitmq-server >/dev/null; then
    say "starting the local rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    command -v rabbitmqctl >/dev/null && timeout 90 rabbitmqctl await_startup >/dev/null 2>&1 || true
    wait_for_broker && return 0
  fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    say "starting RabbitMQ with docker compose"
    docker compose up -d rabbitmq
    wait_for_broker && return 0
  fi
  say "no RabbitMQ available. Install one (apt-get install rabbitmq-server), run"
  say "'docker compose up -d rabbitmq', or point EVENTWORKER_URL at a running broker."
  return 1
}

# -- PostgreSQL for the outbox tests (issue 8) ------------------------------------------------
# Use the one at 127.0.0.1:5432 if it answers; else start the local cluster; else install it
# from the OS packages when root; else tell the tests to skip with the reason.
pg_answers() {
  .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 2).close()' 2>/dev/null
}

ensure_postgres_for_outbox() {
  pg_answers && return 0
  if ! command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing postgresql from the OS packages (outbox tests)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || true
  fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do pg_answers && break; sleep 1; done
  fi
  if pg_answers; then
    # Tests connect as postgres to the database test, with trust authentication on loopback.
    if command -v psql >/dev/null && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
      su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\" | grep -q 1 || createdb test" >/dev/null 2>&1 || true
    fi
    return 0
  fi
  export EVENTWORKER_TEST_PG_SKIP="no PostgreSQL at 127.0.0.1:5432 and none could be started or installed"
  say "no PostgreSQL: the outbox tests on PostgreSQL will be skipped"
}

setup_venv
ensure_rabbitmq
ensure_postgres_for_outbox
