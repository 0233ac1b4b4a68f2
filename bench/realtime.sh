#!/usr/bin/env bash
# Whole-system real-time tag benchmark: `portrait serve` with 20 realtime tags (mixed kinds,
# bench/realtime/tags20.yaml), events through the Segment API from `portrait-loadgen` in a
# second process on the same 2 cores.
#   1. Maximum throughput: EVENTS events as fast as possible; the time until the real-time
#      engine has applied the last one gives events/s and tag-state updates/s end to end; the
#      engine thread's own CPU time gives the rate per core.
#   2. Latency at half that rate, once per BATCH:ARRIVALS in LATENCY_PHASES (default
#      "100:poisson 500:poisson 500:aligned": a batch of the Segment server libraries' usual
#      size and the throughput phase's, sent by 4 connections at independent exponentially
#      distributed times — the usual model of many clients — and, as the worst case, with the
#      4 connections sending at the same instants, a burst of 2,000 events at every gap):
#      probes (one new person each) measure how long after the send
#      and after the acknowledgement the tag change is readable in the change stream (as seen
#      by a client on the same 2 cores), and the server's own visibility lag of every event of
#      the phase (`GET /api/v1/realtime` → visibility, reset when the phase starts).
# Usage: bash bench/realtime.sh [EVENTS] [PROBES]   (needs ~3 GB free under $TMPDIR for 2M events)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000000}
PROBES=${2:-2000}
cargo build --profile bench -p portrait-cli >/dev/null
B=target/release
DIR=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
export PORTRAIT_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
$B/portrait source add --data "$DIR" app --kind app --write-key bench-write-key >/dev/null
PORTRAIT_ADMIN_TOKEN=bench $B/portrait serve --data "$DIR" --listen 127.0.0.1:$PORT --compact-every 0 2>"$DIR/server.log" &
PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:$PORT/health >/dev/null && break; sleep 0.1; done
A=(-H 'Authorization: Bearer bench')
curl -sf "${A[@]}" -X POST --data-binary @bench/realtime/tags20.yaml "127.0.0.1:$PORT/api/v1/tags?publish=true" >/dev/null
# Store the tags once (as an operator would before saving audiences): the scheduler's next batch
# refresh of realtime tags is then 15 minutes away, not in the middle of the measurement.
curl -sf "${A[@]}" -X POST -d '{}' "127.0.0.1:$PORT/api/v1/compute" >/dev/null
rt() { curl -sf "${A[@]}" 127.0.0.1:$PORT/api/v1/realtime; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "realtime tags: $(rt | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tags"]))')"
engine_cpu() { # utime+stime of the real-time worker thread, seconds
  for t in /proc/$PID/task/*; do
    if grep -q portrait-realti "$t/comm" 2>/dev/null; then
      awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "$t/stat"; return; fi
  done; echo 0; }
CPU0=$(engine_cpu)
T0=$(date +%s.%N)
$B/portrait-loadgen --addr 127.0.0.1:$PORT --write-key bench-write-key --events "$EVENTS" \
  --connections 4 --batch 500 --seed 1 --fresh-timestamps 2>/dev/null
while :; do
  read -r APPLIED QUEUED < <(rt | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["counters"]["events"], s["queued"])')
  [ "$APPLIED" -ge "$EVENTS" ] && [ "$QUEUED" -eq 0 ] && break
  sleep 0.05
done
T1=$(date +%s.%N)
CPU1=$(engine_cpu)
rt | python3 -c "
import json,sys
s=json.load(sys.stdin); c=s['counters']; wall=$T1-$T0; cpu=$CPU1-$CPU0
print(f'throughput: events={c[\"events\"]} wall_s={wall:.2f} events_per_s={c[\"events\"]/wall:.0f} '
      f'tag_state_updates={c[\"updates\"]} updates_per_s={c[\"updates\"]/wall:.0f} evaluations={c[\"evaluations\"]} changes={c[\"changes\"]}')
print(f'engine thread: cpu_s={cpu:.2f} events_per_cpu_s={c[\"events\"]/max(cpu,1e-9):.0f} updates_per_cpu_s={c[\"updates\"]/max(cpu,1e-9):.0f} evaluations_per_cpu_s={c[\"evaluations\"]/max(cpu,1e-9):.0f}')
print(f'profiles with state: {s[\"profiles\"]}')
open('$DIR/rate','w').write(str(int(c['events']/wall)))
"
HALF=$(( $(cat "$DIR/rate") / 2 ))
SEED=2
for PHASE in ${LATENCY_PHASES:-100:poisson 500:poisson 500:aligned}; do
BATCH=${PHASE%%:*}; ARRIVALS=${PHASE#*:}
echo "latency at half of the maximum rate ($HALF events/s), batches of $BATCH, $ARRIVALS arrivals, $PROBES probes:"
curl -sf "${A[@]}" -X POST 127.0.0.1:$PORT/api/v1/realtime/visibility/reset >/dev/null
$B/portrait-loadgen --addr 127.0.0.1:$PORT --write-key bench-write-key --events "$EVENTS" \
  --connections 4 --batch "$BATCH" --seed "$SEED" --fresh-timestamps --rate "$HALF" --arrivals "$ARRIVALS" \
  --probes "$PROBES" --token bench 2>&1 | grep -v '^building'
rt | python3 -c "
import json,sys
s=json.load(sys.stdin)
for key, what in (('visibility', 'change readable'), ('applied', 'values in the profile API')):
    v=s[key]
    print(f'server-side visibility lag (store hand-over -> {what}), every event of the phase: events={v[\"events\"]} p50_ms={v[\"p50_ms\"]} p99_ms={v[\"p99_ms\"]} p999_ms={v[\"p999_ms\"]} max_ms={v[\"max_ms\"]}')
"
SEED=$((SEED + 1))
done
echo "server RSS: $(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$PID/status)"
echo "server log (slow engine rounds, snapshots, scheduled work):"
grep -vE "^\s*$" "$DIR/server.log" | sed "s/\x1b\[[0-9;]*m//g" | grep -vE "request|GET|POST" | tail -40 || true
