"""Runs the benchmark's aggregate SQL (written by the tagbench example) in DuckDB and chDB,
both limited to 2 threads, over the same Parquet lake; checks each result against the
kernel's per-slot checksums and prints a table.

usage: peers.py LAKE_DIR SQL_DIR [RUNS]
"""
import json
import math
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc


def checksums(table: pa.Table, n_slots: int):
    out = []
    for i in range(n_slots):
        col = table.column(f"a{i}")
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            out.append((len(col) - col.null_count, 0.0))
            continue
        col = pc.cast(col, pa.float64())
        nz = pc.filter(col, pc.and_(pc.is_valid(col), pc.not_equal(col, 0.0)))
        out.append((len(nz), float(pc.sum(nz).as_py() or 0.0)))
    return out


def times_checksums(table, n_slots, time_slots):
    sums = checksums(table, n_slots)
    for i in time_slots:
        col = pc.cast(table.column(f"a{i}"), pa.int64())
        vals = [v for v in col.to_pylist() if v is not None]
        sums[i] = (len(vals), float(sum(v // 1000 for v in vals)))
    return sums


def same(a, b):
    bad = []
    for i, ((n1, s1), (n2, s2)) in enumerate(zip(a, b)):
        if n1 != n2 or not math.isclose(s1, s2, rel_tol=1e-6, abs_tol=1e-6):
            bad.append(f"a{i}: peer ({n1}, {s1}) kernel ({n2}, {s2})")
    return bad


def main():
    lake, sql_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    kernel = json.load(open(f"{sql_dir}/kernel_checksums.json"))
    ktime = json.load(open(f"{sql_dir}/kernel_times.json"))
    n_slots = len(kernel)
    kernel = [tuple(x) for x in kernel]
    # Time-valued slots: the SQL comments name the function.
    duck_sql = open(f"{sql_dir}/duckdb.sql").read()
    time_slots = [i for i in range(n_slots)
                  if f"-- slot {i}: LastTime" in duck_sql or f"-- slot {i}: FirstTime" in duck_sql]
    events = f"{lake}/events/*/*.parquet"
    pmap = f"{lake}/profile_map.parquet"
    results = {}

    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 2")
    q = duck_sql.replace("FROM events e", f"FROM read_parquet('{events}', hive_partitioning = true) e") \
                .replace("JOIN profile_map m", f"JOIN read_parquet('{pmap}') m")
    best = None
    for _ in range(runs):
        t = time.perf_counter()
        table = con.sql(q).to_arrow_table()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    results["DuckDB " + duckdb.__version__] = (best, same(times_checksums(table, n_slots, time_slots), kernel), table.num_rows)

    import chdb
    ch_sql = open(f"{sql_dir}/clickhouse.sql").read()
    q = ch_sql.replace("FROM events e", f"FROM file('{events}', Parquet) e") \
              .replace("JOIN profile_map m", f"JOIN file('{pmap}', Parquet) m")
    q = q.rstrip() + "\nSETTINGS max_threads = 2, use_hive_partitioning = 1"
    best = None
    for _ in range(runs):
        t = time.perf_counter()
        table = chdb.query(q, "ArrowTable")
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    results["chDB " + chdb.__version__] = (best, same(times_checksums(table, n_slots, time_slots), kernel), table.num_rows)

    k = ktime["best"]
    print(f"\n{'engine':<22}{'best s':>10}{'M events/s':>12}{'vs Portrait':>13}  result")
    print(f"{'Portrait kernel':<22}{k:>10.3f}{ktime['events'] / k / 1e6:>12.1f}{1.0:>13.2f}  (reference)")
    for name, (t, bad, rows) in results.items():
        status = "checksums equal" if not bad else "DIFFERS: " + "; ".join(bad[:4])
        print(f"{name:<22}{t:>10.3f}{ktime['events'] / t / 1e6:>12.1f}{t / k:>13.2f}  {rows} rows, {status}")
    faster = min(t for t, _, _ in results.values())
    print(f"\nPortrait / faster peer = {k / faster:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
