#!/usr/bin/env bash
# Whole-system ingest benchmark: `portrait serve` with durable acks and identity resolution,
# driven over loopback by `portrait-loadgen` in a second process.
# Usage: bash bench/ingest.sh [EVENTS] [CONNECTIONS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000000}
CONNECTIONS=${2:-4}
BATCH=${3:-500}
cargo build --profile bench -p portrait-cli >/dev/null
B=target/release
DIR=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
# Encryption at rest is on, as in production; the key stays in the environment.
export PORTRAIT_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
$B/portrait source add --data "$DIR" app --kind app --write-key bench-write-key >/dev/null
PORTRAIT_ADMIN_TOKEN=bench $B/portrait serve --data "$DIR" --listen 127.0.0.1:$PORT --compact-every 0 2>/dev/null &
PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:$PORT/health >/dev/null && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
$B/portrait-loadgen --addr 127.0.0.1:$PORT --write-key bench-write-key --events "$EVENTS" \
  --connections "$CONNECTIONS" --batch "$BATCH" --seed 1 2>/dev/null
$B/portrait-loadgen --addr 127.0.0.1:$PORT --write-key bench-write-key --events "$EVENTS" \
  --connections "$CONNECTIONS" --batch "$BATCH" --seed 2 2>/dev/null
echo "server RSS after $((2 * EVENTS)) events: $(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$PID/status)"
curl -s -H 'Authorization: Bearer bench' 127.0.0.1:$PORT/api/v1/stats; echo
