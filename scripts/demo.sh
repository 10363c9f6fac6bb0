#!/usr/bin/env bash
# Quick start: set everything up and run a worker with the example plugin; demo events are
# published so that a success, a retry and a dead letter show in the log. Ctrl-C stops it.
# DEMO_SECONDS=N stops the worker by itself after N seconds (with SIGTERM, a graceful drain).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
export EVENTWORKER_EXCHANGE="${EVENTWORKER_EXCHANGE:-eventworker.demo}"
export EVENTWORKER_QUEUE_PREFIX="${EVENTWORKER_QUEUE_PREFIX:-eventworker.demo.}"
# The example plugin's middleware: "took N ms" after each handler call.
export EVENTWORKER_MIDDLEWARE="${EVENTWORKER_MIDDLEWARE:-timing}"
EW=.venv/bin/eventworker

$EW handlers
$EW run &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker' INT TERM
sleep 3
if ! kill -0 $worker 2>/dev/null; then
  wait $worker; exit $?   # the worker could not start; its error is above
fi
say "publishing demo events"
$EW publish demo.greet '{"name": "Ada"}'                          # acked
$EW publish demo.flaky '{"job": 1}'                               # fails twice, then acked
$EW publish demo.broken '{"job": 2}'                              # three attempts, dead letter
$EW publish orders.created '{"order_id": "o-1", "total": 12.5}'   # acked, publishes billing.charged
$EW publish orders.eu.created '{"order_id": "o-2", "total": "n/a"}' # fails its model: dead letter
$EW publish users.signed_up '{"email": "ada@example.com", "name": "Ada"}' # the mailer resource
$EW publish users.signed_up '{"email": "grace@example.com"}'      # fails its inferred model
say "watch the log; Ctrl-C drains and stops the worker"
say "console: in another shell run \`EVENTWORKER_EXCHANGE=$EVENTWORKER_EXCHANGE" \
  "EVENTWORKER_QUEUE_PREFIX=$EVENTWORKER_QUEUE_PREFIX $EW console --allow-actions\`," \
  "then open http://127.0.0.1:8025/"
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"; kill -TERM $worker
fi
wait $worker
