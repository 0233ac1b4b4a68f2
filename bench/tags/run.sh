#!/usr/bin/env bash
# Batch tag benchmark: Portrait's fused kernel vs DuckDB and chDB (each limited to 2 threads)
# computing the same 20 tags (bench/tags/tags20.yaml: the kernel plus evaluate_population for
# Portrait, `tags_sql` for the peers) over the same Parquet lake.
#
#   bench/tags/run.sh [EVENTS] [PROFILES] [RUNS]      default 10000000 1000000 3
#
# Writes the lake to target/bench-lake/<EVENTS>_<PROFILES>/ (reused when present), the SQL of
# each dialect to its sql/ directory, and installs duckdb + chdb + pyarrow into
# target/bench-venv on first use. Add DATAFUSION=1 to also time the DataFusion back end.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${1:-10000000}
PROFILES=${2:-1000000}
RUNS=${3:-3}
LAKE=target/bench-lake/${EVENTS}_${PROFILES}
VENV=target/bench-venv

cargo build --profile bench -p portrait-batch --examples
BIN=target/release/examples
if [ ! -f "$LAKE/profile_map.parquet" ]; then
  "$BIN/genlake" --events "$EVENTS" --profiles "$PROFILES" --days 400 --out "$LAKE"
fi
du -sh "$LAKE"

DF_FLAG=()
if [ "${DATAFUSION:-0}" = 1 ]; then DF_FLAG=(--datafusion); fi
"$BIN/tagbench" --lake "$LAKE" --out "$LAKE/sql" --runs "$RUNS" "${DF_FLAG[@]}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q duckdb chdb pyarrow
fi
"$VENV/bin/python" bench/tags/peers.py "$LAKE" "$LAKE/sql" "$RUNS"
