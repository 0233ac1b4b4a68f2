//! Times the fused kernel (and optionally DataFusion) on a lake, and writes the same
//! aggregates as DuckDB / ClickHouse SQL for the benchmark peers (`bench/tags/run.sh`).
//!
//! ```text
//! cargo run --release -p portrait-batch --example tagbench -- \
//!     --lake target/bench-lake/10m --out target/bench-lake/10m/sql --runs 3 [--datafusion]
//! ```
//!
//! The plan is the 24 deduplicated aggregates of `bench/tags/tags20.yaml`, built by hand here
//! until `portrait_tags::{def::parse_defs, compile::compile}` exist.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use portrait_batch::{aggregate, to_sql, Aggregated, Dialect, KernelOptions};
use portrait_tags::ir::{AggFunc, Aggregate, CmpOp, Column, EventField, Expr, Plan, Window};
use portrait_tags::value::{Type, Value};

/// 2025-06-30T23:59:59.999+08:00 (the end of genlake's last day).
const AS_OF: i64 = 1_751_299_199_999;
const DAY: i64 = 86_400_000;

fn s(x: &str) -> Expr {
    Expr::Lit(Value::Str(x.into()))
}
fn eq(a: Expr, b: Expr) -> Expr {
    Expr::Cmp(CmpOp::Eq, Box::new(a), Box::new(b))
}
fn ev(name: &str) -> Option<Expr> {
    Some(eq(Expr::Event(EventField::Name), s(name)))
}
fn rev() -> Option<Expr> {
    Some(Expr::Property {
        path: vec!["revenue".into()],
        ty: Type::Number,
    })
}
fn d(n: i64) -> Window {
    Window::Rolling { ms: n * DAY }
}
fn a(func: AggFunc, arg: Option<Expr>, filter: Option<Expr>, window: Window) -> Aggregate {
    Aggregate {
        func,
        arg,
        filter,
        window,
    }
}

/// The aggregates of tags20.yaml, deduplicated.
fn plan() -> Plan {
    use AggFunc::*;
    let oc = "Order Completed";
    let pv = "Product Viewed";
    let aggregates = vec![
        a(Count, None, ev(pv), d(7)),
        a(Count, None, ev("Product Favorited"), d(7)),
        a(Count, None, ev("Product Added"), d(7)),
        a(Sum, rev(), ev(oc), d(90)),
        a(LastTime, None, ev(oc), Window::All),
        a(Count, None, ev(oc), d(30)),
        a(Count, None, ev(oc), Window::All),
        a(Count, None, ev(oc), d(365)),
        a(Sum, rev(), ev(oc), d(365)),
        a(Avg, rev(), ev(oc), Window::All),
        a(Max, rev(), ev(oc), d(180)),
        a(Count, None, ev(pv), Window::Calendar { days: 7 }),
        a(
            Count,
            None,
            Some(eq(Expr::Event(EventField::Type), s("page"))),
            d(30),
        ),
        a(
            Count,
            None,
            Some(Expr::In {
                expr: Box::new(Expr::Event(EventField::Source)),
                list: vec![
                    Value::Str("app_ios".into()),
                    Value::Str("app_android".into()),
                ],
                negated: false,
            }),
            d(90),
        ),
        a(
            Count,
            None,
            Some(eq(Expr::Event(EventField::Source), s("wechat_mp"))),
            d(30),
        ),
        a(
            CountDistinct,
            Some(Expr::Property {
                path: vec!["sku".into()],
                ty: Type::Str,
            }),
            ev(pv),
            d(30),
        ),
        a(LastTime, None, None, Window::All),
        a(FirstTime, None, ev(oc), Window::All),
        a(Count, None, ev("Product Added"), d(14)),
        a(Count, None, ev(oc), d(14)),
        a(
            Count,
            None,
            Some(Expr::And(vec![
                eq(Expr::Event(EventField::Name), s(oc)),
                Expr::Cmp(
                    CmpOp::Ge,
                    Box::new(Expr::Property {
                        path: vec!["revenue".into()],
                        ty: Type::Number,
                    }),
                    Box::new(Expr::Lit(Value::Num(1000.0))),
                ),
            ])),
            d(365),
        ),
        a(Count, None, ev("Coupon Used"), d(180)),
        a(
            Count,
            None,
            ev(pv),
            Window::Ago {
                from_ms: 60 * DAY,
                to_ms: 30 * DAY,
            },
        ),
        a(Count, None, ev(pv), d(30)),
    ];
    Plan {
        aggregates,
        tags: Vec::new(),
        time_zone: chrono_tz::Asia::Shanghai,
    }
}

/// Per slot: (non-null non-zero values, sum) — Times summed in whole seconds. The peers
/// compute the same from their result rows.
fn checksums(r: &Aggregated) -> Vec<(u64, f64)> {
    r.columns
        .iter()
        .map(|c| match c {
            Column::Num(v) => v
                .iter()
                .filter(|x| !x.is_nan() && **x != 0.0)
                .fold((0, 0.0), |(n, s), x| (n + 1, s + x)),
            Column::Time(v) => v
                .iter()
                .filter(|t| **t != i64::MIN)
                .fold((0, 0.0), |(n, s), t| (n + 1, s + t.div_euclid(1000) as f64)),
            Column::Str(v) => (v.iter().filter(|x| x.is_some()).count() as u64, 0.0),
            Column::Bool(v) => (v.iter().filter(|x| x.is_some()).count() as u64, 0.0),
        })
        .collect()
}

fn main() {
    let mut lake = PathBuf::from("target/bench-lake");
    let mut out: Option<PathBuf> = None;
    let mut runs = 3;
    let mut threads = 2;
    let mut with_df = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--lake" => lake = args[i + 1].clone().into(),
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
    let plan = plan();
    if let Some(out) = &out {
        std::fs::create_dir_all(out).unwrap();
        for (dialect, file) in [
            (Dialect::DuckDb, "duckdb.sql"),
            (Dialect::ClickHouse, "clickhouse.sql"),
            (Dialect::DataFusion, "datafusion.sql"),
        ] {
            std::fs::write(out.join(file), to_sql(&plan, AS_OF, dialect).unwrap()).unwrap();
        }
    }
    let opts = KernelOptions {
        threads,
        ..KernelOptions::default()
    };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let r = aggregate(&lake, &plan, AS_OF, &opts, &mut |_| {}).unwrap();
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let r = last.unwrap();
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "kernel: {} aggregates, {} files, {} events, {} ids; best {best:.3}s median {median:.3}s ({:.1} M events/s at best)",
        plan.aggregates.len(),
        r.files_scanned,
        r.events_scanned,
        r.id_space,
        r.events_scanned as f64 / best / 1e6
    );
    let sums = checksums(&r);
    if let Some(out) = &out {
        let json: Vec<String> = sums.iter().map(|(n, s)| format!("[{n}, {s:?}]")).collect();
        std::fs::write(
            out.join("kernel_checksums.json"),
            format!("[{}]\n", json.join(", ")),
        )
        .unwrap();
        std::fs::write(
            out.join("kernel_times.json"),
            format!(
                "{{\"best\": {best}, \"median\": {median}, \"events\": {}}}\n",
                r.events_scanned
            ),
        )
        .unwrap();
    }
    if with_df {
        let t = Instant::now();
        let d = portrait_batch::datafusion::aggregate_sql(&lake, &plan, AS_OF).unwrap();
        let dt = t.elapsed().as_secs_f64();
        let same = checksums(&d)
            .iter()
            .zip(&sums)
            .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() <= 1e-6 * b.1.abs().max(1.0));
        println!("datafusion: {dt:.3}s, checksums equal to kernel: {same}");
        if let Some(out) = &out {
            std::fs::write(
                out.join("datafusion_time.json"),
                format!("{{\"seconds\": {dt}, \"equal\": {same}}}\n"),
            )
            .unwrap();
        }
    }
}
