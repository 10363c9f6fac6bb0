#!/bin/sh
# Sending an event to the HTTP ingress with a request signature, from a shell (docs/producers.md).
# Usage: SECRET=... INGRESS=http://127.0.0.1:8080 webhook_sender.sh ORDER_ID
set -eu
order_id=$1
path=/events/orders.created
body="{\"order_id\": \"$order_id\"}"
key="$order_id-created"
type=application/json
t=$(date +%s)
# t, method, path, Idempotency-Key, X-Correlation-Id (none here: empty), Content-Type, body
sig=$(printf '%s\n%s\n%s\n%s\n%s\n%s\n%s' "$t" POST "$path" "$key" "" "$type" "$body" |
    openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
curl -sS --fail-with-body "$INGRESS$path" \
    -H "Content-Type: $type" \
    -H "Idempotency-Key: $key" \
    -H "X-Signature-256: t=$t,v1=$sig" \
    --data-binary "$body"
