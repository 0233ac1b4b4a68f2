#!/usr/bin/env bash
# Audience preview through the HTTP API at N profiles (default 10M): builds a synthetic tag
# store (5 tags), starts `portrait serve` on it and times POST /api/v1/audiences/preview from
# a client on the same machine (Python urllib, keep-alive off: every request a new connection).
# Prints client-side p50/p99 and the server's own `took_ms`.
#   bash bench/audience.sh [N]
set -euo pipefail
N=${1:-10000000}
cd "$(dirname "$0")/.."
cargo build --profile bench -q -p portrait-cli --bin portrait
cargo build --profile bench -q -p portrait-tagging --example synth_store
DIR=$(mktemp -d /tmp/portrait-audience.XXXX)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR" "$DIR.key"' EXIT
./target/release/portrait source add --data "$DIR/data" app --kind app >/dev/null
./target/release/examples/synth_store "$DIR/data" "$N"
PORT=$((20000 + RANDOM % 20000))
PORTRAIT_ADMIN_TOKEN=bench-token ./target/release/portrait serve --data "$DIR/data" --listen 127.0.0.1:$PORT 2>"$DIR/serve.log" &
SERVER=$!
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.2
done
python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request
port = sys.argv[1]
exprs = [
    'high_intent and vip',
    'high_intent and lifecycle in ("active","new") and spend_90d >= 500 and not complained_30d',
    'lifecycle = "dormant" and spend_90d between 100 and 300',
    'not vip or complained_30d',
]
def post(e):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/audiences/preview",
        data=json.dumps({"expression": e, "sample": 10}).encode(),
        headers={"Authorization": "Bearer bench-token", "Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        body = json.loads(r.read())
    return (time.perf_counter() - t) * 1000, body
print(f"{'expression':<90} {'count':>10} {'p50 ms':>7} {'p99 ms':>7} {'server p50':>10}")
for e in exprs:
    for _ in range(5):
        post(e)
    lat, srv = [], []
    for _ in range(200):
        ms, body = post(e)
        lat.append(ms); srv.append(body["took_ms"])
    lat.sort(); srv.sort()
    print(f"{e:<90} {body['count']:>10} {lat[100]:>7.2f} {lat[197]:>7.2f} {srv[100]:>10.2f}")
PY
