//! Times Portrait's whole batch tag computation (the fused kernel's aggregates, then every tag
//! with `portrait_tags::eval::evaluate_population`) on a lake, and writes the same tags as
//! DuckDB / ClickHouse / DataFusion SQL (`tags_sql`) for the benchmark peers
//! (`bench/tags/run.sh`, `bench/tags/peers.py`).
//!
//! ```text
//! cargo run --release -p portrait-batch --example tagbench -- \
//!     --lake target/bench-lake/10m --out target/bench-lake/10m/sql --runs 3 \
//!     [--tags bench/tags/tags20.yaml] [--datafusion]
//! ```
//!
//! The plan is `bench/tags/tags20.yaml` compiled with `portrait_tags::{parse_defs, compile}`.
//! Output files in `--out`: `duckdb.sql`, `clickhouse.sql`, `datafusion.sql` (the tags SQL),
//! `tags_checksums.json` (per tag: counts per value for rules, stages and buckets; non-null
//! count and sum for metrics — `peers.py` computes the same from the peers' rows) and
//! `portrait_times.json`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use portrait_batch::{aggregate, tags_sql, Dialect, KernelOptions};
use portrait_tags::eval::{evaluate_population, Population, TagColumn};
use portrait_tags::ir::{Plan, TagBody};
use portrait_tags::value::Value;
use portrait_tags::{compile, parse_defs, Known};

/// 2025-06-30T23:59:59.999+08:00 (the end of genlake's last day).
const AS_OF: i64 = 1_751_299_199_999;

fn kind(body: &TagBody) -> &'static str {
    match body {
        TagBody::Rule(_) => "rule",
        TagBody::Stage(_) => "stage",
        TagBody::Metric(_) => "metric",
        TagBody::Buckets { .. } => "buckets",
        TagBody::External => "external",
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A tag's checksum: counts per value (rules, stages, buckets; null as "null"), or the
/// non-null count and the sum (metrics; instants summed in whole seconds).
#[derive(Debug, Clone, PartialEq)]
enum Sum {
    Counts(BTreeMap<String, u64>),
    Metric(u64, f64),
}

fn checksums(plan: &Plan, cols: &[TagColumn]) -> Vec<Sum> {
    plan.tags
        .iter()
        .zip(cols)
        .map(|(tag, col)| {
            if kind(&tag.body) == "metric" {
                let (mut n, mut sum) = (0u64, 0.0f64);
                for v in &col.values {
                    match v {
                        Value::Num(x) => {
                            n += 1;
                            sum += x;
                        }
                        Value::Time(t) => {
                            n += 1;
                            sum += t.div_euclid(1000) as f64;
                        }
                        Value::Null => {}
                        _ => n += 1,
                    }
                }
                Sum::Metric(n, sum)
            } else {
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for v in &col.values {
                    let key = match v {
                        Value::Null => "null".to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Num(x) => format!("{}", *x as i64),
                        Value::Str(s) => s.to_string(),
                        Value::Time(t) => t.to_string(),
                    };
                    *counts.entry(key).or_default() += 1;
                }
                Sum::Counts(counts)
            }
        })
        .collect()
}

/// Equal counts; sums equal to 1e-9 relative.
fn same(a: &[Sum], b: &[Sum]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Sum::Metric(n1, s1), Sum::Metric(n2, s2)) => {
                n1 == n2 && (s1 - s2).abs() <= 1e-9 * s1.abs().max(1.0)
            }
            _ => x == y,
        })
}

/// One JSON object per tag: `{"name", "kind", "counts": {value: n}}` or
/// `{"name", "kind": "metric", "n", "sum"}`.
fn to_json(plan: &Plan, sums: &[Sum]) -> String {
    let out: Vec<String> = plan
        .tags
        .iter()
        .zip(sums)
        .map(|(tag, s)| match s {
            Sum::Metric(n, sum) => format!(
                "{{\"name\": {}, \"kind\": \"metric\", \"n\": {n}, \"sum\": {sum:?}}}",
                json_str(&tag.name)
            ),
            Sum::Counts(counts) => {
                let c: Vec<String> = counts
                    .iter()
                    .map(|(k, n)| format!("{}: {n}", json_str(k)))
                    .collect();
                format!(
                    "{{\"name\": {}, \"kind\": \"{}\", \"counts\": {{{}}}}}",
                    json_str(&tag.name),
                    kind(&tag.body),
                    c.join(", ")
                )
            }
        })
        .collect();
    format!("[\n  {}\n]\n", out.join(",\n  "))
}

fn main() {
    let mut lake = PathBuf::from("target/bench-lake");
    let mut tags = PathBuf::from("bench/tags/tags20.yaml");
    let mut out: Option<PathBuf> = None;
    let mut runs = 3;
    let mut threads = 2;
    let mut with_df = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--lake" => lake = args[i + 1].clone().into(),
            "--tags" => tags = args[i + 1].clone().into(),
            "--out" => out = Some(args[i + 1].clone().into()),
            "--runs" => runs = args[i + 1].parse().unwrap(),
            "--threads" => threads = args[i + 1].parse().unwrap(),
            "--datafusion" => {
                with_df = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let text = std::fs::read_to_string(&tags).unwrap();
    let defs = parse_defs(&text, &tags.display().to_string()).unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let plan = compile(&defs, &Known::default())
        .unwrap_or_else(|d| {
            panic!(
                "{}",
                d.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
        .plan;
    if let Some(out) = &out {
        std::fs::create_dir_all(out).unwrap();
        for (dialect, file) in [
            (Dialect::DuckDb, "duckdb.sql"),
            (Dialect::ClickHouse, "clickhouse.sql"),
            (Dialect::DataFusion, "datafusion.sql"),
        ] {
            std::fs::write(out.join(file), tags_sql(&plan, AS_OF, dialect).unwrap()).unwrap();
        }
    }
    let opts = KernelOptions {
        threads,
        ..KernelOptions::default()
    };
    // (total, kernel, tags) per run.
    let mut times: Vec<(f64, f64, f64)> = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let r = aggregate(&lake, &plan, AS_OF, &opts, &mut |_| {}).unwrap();
        let t_kernel = t.elapsed().as_secs_f64();
        let no_traits = |_: u32| None;
        let no_profile = |_: u32, _| Value::Null;
        let no_externals = |_: usize, _: u32| Value::Null;
        let pop = Population {
            ids: &r.live,
            aggs: &r.columns,
            traits: &no_traits,
            profile: &no_profile,
            externals: &no_externals,
            as_of: AS_OF,
        };
        let cols = evaluate_population(&plan, &pop);
        let total = t.elapsed().as_secs_f64();
        times.push((total, t_kernel, total - t_kernel));
        last = Some((r, cols));
    }
    let (r, cols) = last.unwrap();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (best, best_kernel, best_tags) = times[0];
    let median = times[times.len() / 2].0;
    println!(
        "portrait: {} tags, {} aggregates, {} files, {} events, {} live profiles; best {best:.3}s \
         (kernel {best_kernel:.3}s + tags {best_tags:.3}s), median {median:.3}s \
         ({:.1} M events/s at best)",
        plan.tags.len(),
        plan.aggregates.len(),
        r.files_scanned,
        r.events_scanned,
        r.live.len(),
        r.events_scanned as f64 / best / 1e6
    );
    let sums = checksums(&plan, &cols);
    if let Some(out) = &out {
        std::fs::write(out.join("tags_checksums.json"), to_json(&plan, &sums)).unwrap();
        std::fs::write(
            out.join("portrait_times.json"),
            format!(
                "{{\"best\": {best}, \"kernel\": {best_kernel}, \"tags\": {best_tags}, \
                 \"median\": {median}, \"events\": {}, \"profiles\": {}}}\n",
                r.events_scanned,
                r.live.len()
            ),
        )
        .unwrap();
    }
    if with_df {
        let t = Instant::now();
        let d = portrait_batch::datafusion::tags_sql_datafusion(&lake, &plan, AS_OF).unwrap();
        let dt = t.elapsed().as_secs_f64();
        let same = d.ids == r.live && same(&checksums(&plan, &d.columns), &sums);
        println!("datafusion tags_sql: {dt:.3}s, checksums equal to Portrait's: {same}");
        if let Some(out) = &out {
            std::fs::write(
                out.join("datafusion_time.json"),
                format!("{{\"seconds\": {dt}, \"equal\": {same}}}\n"),
            )
            .unwrap();
        }
    }
}
