"""Runs the benchmark's tags SQL (written by the tagbench example with `tags_sql`) in DuckDB and
chDB, both limited to 2 threads, over the same Parquet lake; checks each engine's tag values
against Portrait's per-tag checksums (counts per value for rules, stages and buckets; non-null
count and sum for metrics) and prints a table.

usage: peers.py LAKE_DIR SQL_DIR [RUNS]
"""
import json
import math
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc


def key(kind, v):
    if v is None:
        return "null"
    if kind == "rule":
        return "true" if v else "false"
    if kind == "buckets":
        return str(int(v))
    return str(v)


def checksums(table: pa.Table, spec):
    out = []
    for tag in spec:
        col = table.column(tag["name"])
        if tag["kind"] == "metric":
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                out.append({"n": len(col) - col.null_count, "sum": 0.0})
                continue
            x = pc.cast(col, pa.float64())
            out.append({"n": len(x) - x.null_count, "sum": float(pc.sum(x).as_py() or 0.0)})
        else:
            counts = {}
            for row in pc.value_counts(col).to_pylist():
                k = key(tag["kind"], row["values"])
                counts[k] = counts.get(k, 0) + row["counts"]
            out.append({"counts": counts})
    return out


def differences(got, spec):
    bad = []
    for g, want in zip(got, spec):
        if want["kind"] == "metric":
            if g["n"] != want["n"] or not math.isclose(g["sum"], want["sum"], rel_tol=1e-9, abs_tol=1e-6):
                bad.append(f"{want['name']}: peer (n {g['n']}, sum {g['sum']}) "
                           f"Portrait (n {want['n']}, sum {want['sum']})")
        elif g["counts"] != want["counts"]:
            bad.append(f"{want['name']}: peer {g['counts']} Portrait {want['counts']}")
    return bad


def timed(run, runs):
    best, table = None, None
    for _ in range(runs):
        t = time.perf_counter()
        table = run()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, table


def main():
    lake, sql_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    spec = json.load(open(f"{sql_dir}/tags_checksums.json"))
    ptime = json.load(open(f"{sql_dir}/portrait_times.json"))
    events = f"{lake}/events/*/*.parquet"
    pmap = f"{lake}/profile_map.parquet"
    results = {}

    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 2")
    q = open(f"{sql_dir}/duckdb.sql").read()
    q = q.replace("FROM events e", f"FROM read_parquet('{events}', hive_partitioning = true) e") \
         .replace("JOIN profile_map m", f"JOIN read_parquet('{pmap}') m") \
         .replace("FROM profile_map l", f"FROM read_parquet('{pmap}') l")
    best, table = timed(lambda: con.sql(q).to_arrow_table(), runs)
    results["DuckDB " + duckdb.__version__] = (best, differences(checksums(table, spec), spec), table.num_rows)

    import chdb
    q = open(f"{sql_dir}/clickhouse.sql").read()
    q = q.replace("FROM events e", f"FROM file('{events}', Parquet) e") \
         .replace("JOIN profile_map m", f"JOIN file('{pmap}', Parquet) m") \
         .replace("FROM profile_map l", f"FROM file('{pmap}', Parquet) l")
    q = q.rstrip() + ", max_threads = 2, use_hive_partitioning = 1"
    best, table = timed(lambda: chdb.query(q, "ArrowTable"), runs)
    results["chDB " + chdb.__version__] = (best, differences(checksums(table, spec), spec), table.num_rows)

    ev = ptime["events"]
    faster = min(t for t, _, _ in results.values())
    print(f"\n{len(spec)} tags, {ev} events, {ptime['profiles']} live profiles; best of {runs} runs")
    print(f"{'engine':<24}{'seconds':>9}{'M events/s':>12}{'vs faster peer':>16}  result")
    k = ptime["best"]
    print(f"{'Portrait (kernel+tags)':<24}{k:>9.3f}{ev / k / 1e6:>12.1f}{k / faster:>16.2f}"
          f"  kernel {ptime['kernel']:.3f}s + tags {ptime['tags']:.3f}s (reference)")
    for name, (t, bad, rows) in results.items():
        status = "tag checksums equal" if not bad else "DIFFERS: " + "; ".join(bad[:4])
        print(f"{name:<24}{t:>9.3f}{ev / t / 1e6:>12.1f}{t / faster:>16.2f}  {rows} rows, {status}")
    print(f"\nPortrait / faster peer = {k / faster:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
