#!/usr/bin/env bash
# Sourced by scripts/demo.sh and scripts/test.sh: makes .venv, installs the project and the
# example plugin, and makes sure a RabbitMQ answers at $EVENTWORKER_URL (default localhost).
# It also defines ensure_inbox_stores, which scripts/test.sh calls for PostgreSQL and Redis.
# Order: the one at the URL if it answers; else a local rabbitmq-server if installed; else
# install it from the OS packages when root; else `docker compose up -d`; else stop and say how.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export EVENTWORKER_URL="${EVENTWORKER_URL:-amqp://guest:guest@localhost:5672/}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
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

# A broker "answers" only if it completes the start of the AMQP handshake: a node that accepts
# TCP connections but never sends connection.start (seen when a node is wedged) does not count.
broker_answers() {
  .venv/bin/python - "$EVENTWORKER_URL" <<'PY'
import socket, sys
from urllib.parse import urlsplit
try:
    u = urlsplit(sys.argv[1].split(",")[0].strip())
    port = u.port or (5671 if u.scheme == "amqps" else 5672)
    with socket.create_connection((u.hostname or "localhost", port), timeout=10) as s:
        if u.scheme == "amqps":
            sys.exit(0)  # a TLS handshake is needed before AMQP: an open port is all we check
        s.sendall(b"AMQP\x00\x00\x09\x01")
        s.settimeout(10)
        if s.recv(1)[:1] != b"\x01":  # frame type 1: the method frame carrying connection.start
            sys.exit(1)
except Exception:
    sys.exit(1)
PY
}

wait_for_broker() {
  for _ in $(seq 1 60); do broker_answers && return 0; sleep 1; done
  return 1
}

broker_port() {
  .venv/bin/python -c 'import sys; from urllib.parse import urlsplit
u = urlsplit(sys.argv[1].split(",")[0].strip())
print(u.port or 5672 if u.hostname in ("localhost", "127.0.0.1", "::1") else "")' "$EVENTWORKER_URL"
}

# A local node that holds the port but does not answer AMQP is stopped so that it can be
# started afresh: SIGTERM (an Erlang node shuts down cleanly on it), then SIGKILL. Only the
# process listening on the configured port is touched (not "rabbitmqctl stop", which names a
# node, not a port); private test nodes on other ports are left alone.
stop_wedged_local_broker() {
  local port pid
  port="$(broker_port)"
  [ -n "$port" ] || return 0
  pid="$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)"
  [ -n "$pid" ] || return 0
  say "the broker on port $port accepts connections but does not answer AMQP; restarting it"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

ensure_rabbitmq() {
  broker_answers && return 0
  stop_wedged_local_broker
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

# --- Inbox stores for the tests (scripts/test.sh calls ensure_inbox_stores) -----------------
# PostgreSQL and Redis: the ones at $EVENTWORKER_TEST_POSTGRES_URL / $EVENTWORKER_TEST_REDIS_URL
# if they answer; else the locally installed servers, started; else installed from the OS
# packages when root; else the tests of that store are skipped, saying why.
export EVENTWORKER_TEST_POSTGRES_URL="${EVENTWORKER_TEST_POSTGRES_URL:-postgresql://postgres:postgres@127.0.0.1:5432/test}"
export EVENTWORKER_TEST_REDIS_URL="${EVENTWORKER_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

service_answers() {  # URL DEFAULT_PORT: does something listen at the URL's host and port?
  .venv/bin/python - "$1" "$2" <<'PY'
import socket, sys
from urllib.parse import urlsplit
try:
    u = urlsplit(sys.argv[1])
    socket.create_connection((u.hostname or "localhost", u.port or int(sys.argv[2])), timeout=2).close()
except Exception:
    sys.exit(1)
PY
}

url_port() {  # URL DEFAULT_PORT
  .venv/bin/python -c 'import sys; from urllib.parse import urlsplit; print(urlsplit(sys.argv[1]).port or sys.argv[2])' "$1" "$2"
}

wait_for_service() {  # URL DEFAULT_PORT
  for _ in $(seq 1 30); do service_answers "$1" "$2" && return 0; sleep 1; done
  return 1
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  service_answers "$EVENTWORKER_TEST_POSTGRES_URL" 5432 && return 0
  say "no PostgreSQL answers for the inbox tests; trying to start one"
  local fresh=""
  if ! command -v pg_ctlcluster >/dev/null && can_apt; then
    say "installing postgresql from the OS packages"
    apt_install postgresql && fresh=1
  fi
  local version; version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)"
  if command -v pg_ctlcluster >/dev/null && [ -n "$version" ]; then
    say "starting the local PostgreSQL $version cluster 'main'"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    if wait_for_service "$EVENTWORKER_TEST_POSTGRES_URL" 5432; then
      if [ "$(id -u)" = 0 ]; then
        # The tests' database; on a fresh install also the password the default URL carries
        # (a fresh cluster asks for one over TCP).
        su postgres -s /bin/sh -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\" | grep -q 1 || createdb test" >/dev/null 2>&1 || true
        [ -n "$fresh" ] && su postgres -s /bin/sh -c "psql -qc \"ALTER ROLE postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
      fi
      return 0
    fi
  fi
  say "no PostgreSQL: the PostgreSQL inbox tests will be skipped (apt-get install postgresql,"
  say "or point EVENTWORKER_TEST_POSTGRES_URL at one)"
}

ensure_redis() {
  service_answers "$EVENTWORKER_TEST_REDIS_URL" 6379 && return 0
  say "no Redis answers for the inbox tests; trying to start one"
  if ! command -v redis-server >/dev/null && can_apt; then
    say "installing redis-server from the OS packages"
    apt_install redis-server || true
  fi
  if command -v redis-server >/dev/null; then
    local dir=/var/lib/redis log=/var/log/redis/ci.log
    if [ "$(id -u)" = 0 ]; then
      mkdir -p /var/lib/redis /var/log/redis
    else
      dir="${TMPDIR:-/tmp}"; log="$dir/eventworker-redis.log"
    fi
    say "starting the local redis-server (nothing kept on disk)"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 \
      --port "$(url_port "$EVENTWORKER_TEST_REDIS_URL" 6379)" --save "" --appendonly no \
      --dir "$dir" --logfile "$log" >/dev/null 2>&1 || true
    wait_for_service "$EVENTWORKER_TEST_REDIS_URL" 6379 && return 0
  fi
  say "no Redis: the Redis inbox tests will be skipped (apt-get install redis-server, or point"
  say "EVENTWORKER_TEST_REDIS_URL at one)"
}

ensure_inbox_stores() {
  ensure_postgres
  ensure_redis
}

ensure_postgres_for_outbox() {  # the outbox tests use the same PostgreSQL as the inbox tests
  ensure_postgres
  if ! service_answers "$EVENTWORKER_TEST_POSTGRES_URL" 5432; then
    export EVENTWORKER_TEST_PG_SKIP="no PostgreSQL at 127.0.0.1:5432 and none could be started or installed"
  fi
}

# --- Foreign AMQP clients for the interop tests (scripts/test.sh calls ensure_interop_clients) --
# rabbitmq-c's amqp-publish/amqp-consume (Debian's amqp-tools) and Node's amqplib (pinned in
# tests/interop/node/package-lock.json), and the AsyncAPI schemas (ensure_asyncapi_schema).
# Installed from the OS packages and npm where possible; where one cannot be had, its tests are
# skipped, saying why.
ensure_interop_clients() {
  command -v amqp-publish >/dev/null || { can_apt && apt_install amqp-tools; } || true
  command -v node >/dev/null && command -v npm >/dev/null || { can_apt && apt_install nodejs npm; } || true
  if command -v npm >/dev/null && [ ! -d tests/interop/node/node_modules/amqplib ]; then
    say "installing amqplib for the interop tests (npm ci)"
    npm ci --prefix tests/interop/node --no-audit --no-fund --silent >/dev/null 2>&1 \
      || say "npm could not install amqplib: its interop tests will be skipped"
  fi
  ensure_asyncapi_schema
  ensure_crd_models
}

# The official AsyncAPI JSON Schemas (@asyncapi/specs, pinned in
# tests/plugins/asyncapi/package-lock.json), which the `eventworker asyncapi` tests validate
# against; without npm those tests are skipped, saying why.
ensure_asyncapi_schema() {
  if command -v npm >/dev/null && [ ! -d tests/plugins/asyncapi/node_modules/@asyncapi/specs ]; then
    say "installing @asyncapi/specs for the AsyncAPI document tests (npm ci)"
    npm ci --prefix tests/plugins/asyncapi --no-audit --no-fund --silent >/dev/null 2>&1 \
      || say "npm could not install @asyncapi/specs: the AsyncAPI validation tests will be skipped"
  fi
}

# The custom resources of KEDA and the Prometheus operator with the validators generated from
# their CRD schemas (@kubernetes-models/keda and /prometheus-operator, pinned in
# tests/deploy/package-lock.json), which the `eventworker deploy kubernetes` tests check
# ScaledObject, TriggerAuthentication and ServiceMonitor against; without npm those checks are
# skipped, saying why.
ensure_crd_models() {
  if command -v npm >/dev/null && { [ ! -d tests/deploy/node_modules/@kubernetes-models/keda ] \
      || [ ! -d tests/deploy/node_modules/@kubernetes-models/prometheus-operator ]; }; then
    say "installing the KEDA and Prometheus-operator models for the manifest tests (npm ci)"
    npm ci --prefix tests/deploy --no-audit --no-fund --silent >/dev/null 2>&1 \
      || say "npm could not install them: the CRD validation tests will be skipped"
  fi
}

# --- A browser for the console's tests (scripts/test.sh calls ensure_browser) -----------------
# Debian's chromium, which Playwright (the test extra) drives through its executable_path; the
# browser Playwright would download itself is not used. Without it the browser tests are
# skipped, saying why.
ensure_browser() {
  [ -x /usr/bin/chromium ] || { can_apt && say "installing chromium for the console's browser tests" \
    && apt_install chromium; } \
    || say "chromium could not be installed: the console's browser tests will be skipped"
}

setup_venv
ensure_rabbitmq
