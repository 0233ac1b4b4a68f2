//! Measures compaction throughput on small track events.
//!
//! ```text
//! cargo run --release -p portrait-lake --example compact_bench -- [EVENTS] [DAYS]
//! ```
//!
//! Ingests EVENTS (default 1 000 000) track events from EVENTS/10 visitors spread over DAYS
//! (default 30) Shanghai dates into a fresh engine in a temp dir, then times: a raw log scan
//! (`Engine::scan_from`), the first compaction, a no-op re-run, and an incremental run over
//! 10 000 new events.

use std::time::Instant;

use portrait_core::segment::{parse_message, Envelope};
use portrait_core::IdentityConfig;
use portrait_lake::compact;
use portrait_store::{Engine, EngineOptions, SourceKind};
use serde_json::json;

const EVENTS: [&str; 5] = [
    "Product Viewed",
    "Product Added",
    "Order Completed",
    "Coupon Claimed",
    "Page Viewed",
];

fn batch(
    config: &IdentityConfig,
    from: u64,
    n: u64,
    total: u64,
    days: u64,
) -> Vec<portrait_core::Message> {
    let env = Envelope {
        source: 1,
        received_at: 1_717_200_000_000,
        ..Default::default()
    };
    let start = 1_714_521_600_000i64; // 2024-05-01T00:00:00Z
    let span = (days * 86_400_000) as i64;
    (from..from + n)
        .map(|i| {
            let ts = start + (i as i64 * span / total.max(1) as i64);
            let v = json!({
                "type": "track",
                "messageId": format!("m{i}"),
                "anonymousId": format!("v{}", i % (total / 10).max(1)),
                "event": EVENTS[(i % 5) as usize],
                "timestamp": portrait_core::time::format_iso(ts),
                "properties": {"sku": format!("SKU-{}", i % 1000), "price": (i % 500) as f64 + 0.9},
            });
            parse_message(&v, &env, config).expect("valid").message
        })
        .collect()
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let days: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    engine
        .sources_mut()
        .add("app", SourceKind::App, Some("app-key-123"))
        .expect("source");
    let config = IdentityConfig::default();

    let t = Instant::now();
    let step = 20_000;
    let mut at = 0;
    while at < total {
        let n = step.min(total - at);
        engine
            .ingest(batch(&config, at, n, total, days))
            .expect("ingest");
        at += n;
    }
    let log_bytes: u64 = std::fs::read_dir(dir.path().join("log"))
        .expect("log")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    println!(
        "ingested {total} events ({:.1} MB of log) in {:.1}s",
        log_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let cpu = cpu_seconds();
    let mut scanned = 0u64;
    engine
        .scan_from(0, |_, _| {
            scanned += 1;
            Ok(true)
        })
        .expect("scan");
    let s = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    println!(
        "raw scan_from: {scanned} messages in {s:.2}s = {:.0} events/s (CPU {cpu:.2}s)",
        scanned as f64 / s
    );

    let t = Instant::now();
    let cpu = cpu_seconds();
    let report = compact(&engine, &mut |_| {}).expect("compact");
    let s = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    println!(
        "first compaction: {} events, {} files, {} profiles, {:.1} MB in {s:.2}s = {:.0} events/s \
         (CPU {cpu:.2}s on 2 threads)",
        report.events,
        report.files.len(),
        report.profiles,
        report.bytes as f64 / 1e6,
        report.events as f64 / s
    );

    let t = Instant::now();
    let report = compact(&engine, &mut |_| {}).expect("compact");
    println!(
        "no-op re-run: {} files in {:.1} ms",
        report.files.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    engine
        .ingest(batch(&config, total, 10_000, total, days))
        .expect("ingest");
    let t = Instant::now();
    let report = compact(&engine, &mut |_| {}).expect("compact");
    println!(
        "incremental run: {} events, {} files (incl. the 2 profile tables), {:.1} MB in {:.2}s",
        report.events,
        report.files.len(),
        report.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
}
