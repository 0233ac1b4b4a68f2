//! `portrait-loadgen`: drives `/v1/batch` from a second process over loopback and reports
//! events/s and acknowledgement latency percentiles.
//!
//! Bodies are built before the clock starts (realistic Segment messages: identify and track
//! calls of a population of people, ~300 bytes each), then `--connections` threads each keep one
//! HTTP/1.1 connection and send their share of batches back to back.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::json;

#[path = "../http.rs"]
mod http;

/// Load generator for the Segment-compatible ingest API.
#[derive(Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// Write key of the target source.
    #[arg(long)]
    write_key: String,
    /// Events to send.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Messages per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct people the events belong to.
    #[arg(long, default_value_t = 100_000)]
    people: usize,
    /// Seed for message ids (change it to send new events to the same server).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn body(args: &Args, b: usize) -> String {
    let events = [
        "Product Viewed",
        "Product Added",
        "Order Completed",
        "Product Favorited",
    ];
    let batch: Vec<_> = (0..args.batch)
        .map(|j| {
            let n = b * args.batch + j;
            let person = (n.wrapping_mul(2_654_435_761)) % args.people;
            let id = format!("s{}-{n}", args.seed);
            if n.is_multiple_of(10) {
                json!({"type": "identify", "messageId": id, "userId": format!("user-{person}"),
                       "anonymousId": format!("anon-{person}"),
                       "traits": {"phone": format!("138{:08}", person), "city": "上海", "level": "gold"},
                       "timestamp": "2026-11-01T10:00:00.000Z"})
            } else {
                json!({"type": "track", "messageId": id, "anonymousId": format!("anon-{person}"),
                       "event": events[n % events.len()],
                       "properties": {"sku": format!("SKU-{}", n % 5000), "price": 199.0, "category": "护肤"},
                       "timestamp": "2026-11-01T10:00:00.000Z"})
            }
        })
        .collect();
    json!({ "batch": batch }).to_string()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let batches = args.events.div_ceil(args.batch);
    eprintln!("building {batches} batches of {} messages…", args.batch);
    let bodies: Vec<String> = (0..batches).map(|b| body(&args, b)).collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let auth = http::basic(&args.write_key);
    let started = Instant::now();
    let results: Vec<Result<(Vec<Duration>, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let (bodies, auth, addr) = (&bodies, &auth, &args.addr);
                scope.spawn(move || -> Result<(Vec<Duration>, usize)> {
                    let mut client = http::Client::connect(addr)?;
                    let mut lat = Vec::new();
                    let mut busy = 0;
                    for b in (c..bodies.len()).step_by(args.connections) {
                        let body = bodies[b].as_bytes();
                        loop {
                            let t = Instant::now();
                            let (code, _) = client.post("/v1/batch", auth, body)?;
                            match code {
                                200 => {
                                    lat.push(t.elapsed());
                                    break;
                                }
                                429 => {
                                    busy += 1;
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                other => bail!("batch {b}: HTTP {other}"),
                            }
                        }
                    }
                    Ok((lat, busy))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("thread panicked")))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut lat = Vec::new();
    let mut busy = 0;
    for r in results {
        let (l, b) = r?;
        lat.extend(l);
        busy += b;
    }
    lat.sort_unstable();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let events = batches * args.batch;
    println!(
        "events={events} batch={} connections={} seconds={:.2} events_per_s={:.0} MB_per_s={:.1} ack_ms_p50={:.2} p99={:.2} p999={:.2} max={:.2} retried_429={busy}",
        args.batch,
        args.connections,
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
    Ok(())
}
