#!/usr/bin/env bash
# Bitmap benchmark peers: pyroaring (CRoaring) and chDB (embedded ClickHouse) over the same
# deterministic sets as `cargo bench -p portrait-tagstore --bench bitmaps`.
# Usage: bash bench/bitmaps.sh [--skip-1b] [--skip-chdb-1b] [--repeat N]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q pyroaring chdb numpy
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$VENV/bin/python" bench/bitmaps.py "$@"
