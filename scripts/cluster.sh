#!/usr/bin/env bash
# A local three-node RabbitMQ cluster for the cluster tests: private nodes ew-c1..3@localhost on
# loopback ports (AMQP $BASE, $BASE+1, $BASE+2), each with its own data folder under $DIR. It
# never touches the shared broker (rabbit@localhost on 5672).
#
#   scripts/cluster.sh start     start the three nodes and cluster them (idempotent)
#   scripts/cluster.sh stop      stop them
#   scripts/cluster.sh status    cluster status as node 1 sees it
#   scripts/cluster.sh urls      the AMQP URLs, comma-separated (for EVENTWORKER_URL)
#
# EW_CLUSTER_DIR (default /tmp/eventworker-cluster), EW_CLUSTER_PORT (default 5701) and
# EW_CLUSTER_NAME (node name prefix, default ew-c) move it, so that two checkouts on one
# machine can each run their own cluster.
# Needs rabbitmq-server and rabbitmqctl; run as root (the nodes run as the rabbitmq user, which
# shares its Erlang cookie with rabbitmqctl) or as the rabbitmq user.
set -euo pipefail
DIR="${EW_CLUSTER_DIR:-/tmp/eventworker-cluster}"
BASE="${EW_CLUSTER_PORT:-5701}"
NAME="${EW_CLUSTER_NAME:-ew-c}"
COUNT=3

node() { echo "$NAME$1@localhost"; }
port() { echo $((BASE + $1 - 1)); }

as_rabbitmq() {
  if [ "$(id -u)" = 0 ]; then su rabbitmq -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

node_env() {
  local i=$1 d="$DIR/n$1"
  echo "RABBITMQ_NODENAME=$(node "$i") RABBITMQ_NODE_PORT=$(port "$i")" \
       "RABBITMQ_DIST_PORT=$((BASE + 20000 + i))" \
       "RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log" \
       "RABBITMQ_CONFIG_FILE=$d/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins" \
       "RABBITMQ_PID_FILE=$d/pid RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
}

ctl() { local n=$1; shift; rabbitmqctl -q -n "$(node "$n")" "$@"; }

running() { ctl "$1" status >/dev/null 2>&1; }

start_node() {
  local i=$1 d="$DIR/n$1"
  if running "$i"; then return 0; fi
  mkdir -p "$d/mnesia" "$d/log"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$(port "$i")" \
    > "$d/rabbitmq.conf"
  echo '[].' > "$d/enabled_plugins"
  [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$d"
  as_rabbitmq "env $(node_env "$i") /usr/lib/rabbitmq/bin/rabbitmq-server -detached" \
    >/dev/null 2>&1
  for _ in $(seq 1 240); do running "$i" && break; sleep 0.5; done
  ctl "$i" await_startup
}

start() {
  command -v rabbitmqctl >/dev/null || { echo "rabbitmqctl not installed" >&2; exit 3; }
  mkdir -p "$DIR"
  # The nodes run as the rabbitmq user: a folder it cannot reach (pytest's tmp_path is private
  # to root) would leave them failing to boot with nothing but a timeout to show for it.
  if [ "$(id -u)" = 0 ]; then
    chown rabbitmq:rabbitmq "$DIR"
    if ! su rabbitmq -s /bin/sh -c "cd '$DIR'" 2>/dev/null; then
      echo "cluster.sh: the rabbitmq user cannot reach $DIR (a parent folder is private);" \
           "set EW_CLUSTER_DIR to a folder it can reach" >&2
      exit 3
    fi
  fi
  for i in $(seq 1 $COUNT); do start_node "$i" & done
  wait
  for i in $(seq 2 $COUNT); do
    if ! ctl 1 cluster_status 2>/dev/null | grep -q "$(node "$i")"; then
      { ctl "$i" stop_app && ctl "$i" reset && ctl "$i" join_cluster "$(node 1)" \
          && ctl "$i" start_app; } >/dev/null 2>&1
    fi
  done
  ctl 1 await_online_nodes $COUNT
  urls
}

stop() {
  for i in $(seq 1 $COUNT); do ctl "$i" stop >/dev/null 2>&1 || true; done
}

urls() {
  local out=()
  for i in $(seq 1 $COUNT); do out+=("amqp://guest:guest@127.0.0.1:$(port "$i")/"); done
  (IFS=,; echo "${out[*]}")
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ctl 1 cluster_status ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop|status|urls" >&2; exit 2 ;;
esac
