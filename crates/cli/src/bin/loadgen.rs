//! `portrait-loadgen`: drives `/v1/batch` from a second process over loopback and reports
//! events/s and acknowledgement latency percentiles.
//!
//! Bodies are built before the clock starts (realistic Segment messages: identify and track
//! calls of a population of people, ~300 bytes each), then `--connections` threads each keep one
//! HTTP/1.1 connection and send their share of batches back to back (or at `--rate`, with
//! Poisson, staggered or aligned arrivals: `--arrivals`).
//!
//! With `--probes N --token T`, a probe thread also sends N single `Realtime Probe` events (one
//! new person each, every `--probe-every-ms`) while a consumer long-polls `/api/v1/changes`:
//! the time from a probe's send (and from its acknowledgement) to the change it causes being
//! readable in the change stream is the real-time engine's visibility latency.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
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
    /// Event times are the time the bodies are built (default: a fixed day in the past).
    #[arg(long)]
    fresh_timestamps: bool,
    /// Target events per second over all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With `--rate`: how the sends of the connections are spread over time.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    arrivals: Arrivals,
    /// Latency probes to send (needs `--token`).
    #[arg(long, default_value_t = 0)]
    probes: usize,
    /// Admin token for reading the change stream.
    #[arg(long)]
    token: Option<String>,
    /// Time between probes, ms.
    #[arg(long, default_value_t = 20)]
    probe_every_ms: u64,
}

/// What a connection's thread reports: its acknowledgement latencies and how many 429s it retried.
type ConnectionReport = (Vec<Duration>, usize);

/// When a paced connection sends its next batch.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Arrivals {
    /// Each connection waits an exponentially distributed time (mean: the connection's share
    /// of the rate) between sends: independent clients, as arrivals at a server usually are;
    /// sends of different connections coincide by chance.
    Poisson,
    /// Fixed gaps, the connections' sends evenly interleaved.
    Staggered,
    /// Fixed gaps, all connections sending at the same instants: a burst of
    /// `connections × batch` events at every gap (the worst case for latency).
    Aligned,
}

impl Arrivals {
    /// When connection `c` of `connections` sends first, after the start.
    fn first(self, gap: Duration, c: usize, connections: usize, rng: &mut StdRng) -> Duration {
        match self {
            Arrivals::Poisson => self.next_gap(gap, rng),
            Arrivals::Staggered => gap.mul_f64(c as f64 / connections as f64),
            Arrivals::Aligned => Duration::ZERO,
        }
    }

    /// The time from one send of a connection to its next (`gap` on average).
    fn next_gap(self, gap: Duration, rng: &mut StdRng) -> Duration {
        match self {
            // Exponentially distributed with mean `gap`: a Poisson process.
            Arrivals::Poisson => gap.mul_f64(-(1.0 - rng.random::<f64>()).ln()),
            Arrivals::Staggered | Arrivals::Aligned => gap,
        }
    }
}

const CATEGORIES: [&str; 3] = ["护肤", "彩妆", "母婴"];

fn body(args: &Args, b: usize, ts: &str) -> String {
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
                       "timestamp": ts})
            } else {
                json!({"type": "track", "messageId": id, "anonymousId": format!("anon-{person}"),
                       "event": events[n % events.len()],
                       "properties": {"sku": format!("SKU-{}", n % 5000), "price": 199.0, "revenue": (n % 997) as f64, "category": CATEGORIES[n % 3]},
                       "timestamp": ts})
            }
        })
        .collect();
    json!({ "batch": batch }).to_string()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let batches = args.events.div_ceil(args.batch);
    eprintln!("building {batches} batches of {} messages…", args.batch);
    let ts = if args.fresh_timestamps {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    } else {
        "2026-11-01T10:00:00.000Z".to_string()
    };
    let bodies: Vec<String> = (0..batches).map(|b| body(&args, b, &ts)).collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let auth = http::basic(&args.write_key);
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let probe_report = std::sync::Mutex::new(None);
    // `elapsed`: until the last batch was acknowledged (the probes may go on after it).
    let (results, elapsed): (Vec<Result<ConnectionReport>>, Duration) =
        std::thread::scope(|scope| {
            if args.probes > 0 {
                let (args, auth, done, report) = (&args, &auth, &done, &probe_report);
                scope.spawn(move || {
                    let r = probes(args, auth, done);
                    *report.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
            let per_conn_gap = (args.rate > 0).then(|| {
                Duration::from_secs_f64(
                    args.batch as f64 * args.connections as f64 / args.rate as f64,
                )
            });
            let handles: Vec<_> = (0..args.connections)
                .map(|c| {
                    let (bodies, auth, addr) = (&bodies, &auth, &args.addr);
                    scope.spawn(move || -> Result<ConnectionReport> {
                        let mut client = http::Client::connect(addr)?;
                        let mut lat = Vec::new();
                        let mut busy = 0;
                        let mut rng =
                            StdRng::seed_from_u64(args.seed.wrapping_mul(1_000_003) ^ c as u64);
                        let mut next = Instant::now();
                        if let Some(gap) = per_conn_gap {
                            next += args.arrivals.first(gap, c, args.connections, &mut rng);
                        }
                        for b in (c..bodies.len()).step_by(args.connections) {
                            if let Some(gap) = per_conn_gap {
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep(next - now);
                                }
                                next += args.arrivals.next_gap(gap, &mut rng);
                            }
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
            let out = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("thread panicked")))
                .collect();
            let elapsed = started.elapsed();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (out, elapsed)
        });
    if let Some(r) = probe_report.into_inner().unwrap_or_else(|p| p.into_inner()) {
        println!("{}", r?);
    }
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

fn percentiles(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50={:.2} p99={:.2} p999={:.2} max={:.2}",
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0)
    )
}

/// Sends probes while the load runs and measures when their changes become readable.
fn probes(args: &Args, auth: &str, done: &std::sync::atomic::AtomicBool) -> Result<String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let token = args
        .token
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--probes needs --token"))?;
    let bearer = format!("Bearer {token}");
    let mut reader = http::Client::connect(&args.addr)?;
    let (code, body) = reader.get("/api/v1/changes?limit=1", &bearer)?;
    if code != 200 {
        bail!("GET /api/v1/changes: HTTP {code}");
    }
    let start: serde_json::Value = serde_json::from_slice(&body)?;
    let mut cursor = start["last"].as_u64().unwrap_or(0);
    // message id → (sent, acknowledged)
    let sent: Mutex<HashMap<String, (Instant, Option<Instant>)>> = Mutex::new(HashMap::new());
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    let finished = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let (sent_ref, finished_ref) = (&sent, &finished);
        let sender = scope.spawn(move || -> Result<()> {
            let mut client = http::Client::connect(&args.addr)?;
            for i in 0..args.probes {
                let id = format!("probe-{}-{i}", args.seed);
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let body = json!({"batch": [{"type": "track", "messageId": id,
                    "userId": format!("probe-user-{}-{i}", args.seed), "event": "Realtime Probe",
                    "timestamp": ts, "properties": {}}]})
                .to_string();
                let t = Instant::now();
                sent_ref
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), (t, None));
                let (code, _) = client.post("/v1/batch", auth, body.as_bytes())?;
                if code != 200 {
                    bail!("probe {i}: HTTP {code}");
                }
                let acked = Instant::now();
                if let Some(e) = sent_ref
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&id)
                {
                    e.1 = Some(acked);
                }
                std::thread::sleep(Duration::from_millis(args.probe_every_ms));
            }
            finished_ref.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        let deadline_after_finish = Duration::from_secs(10);
        let mut finished_at: Option<Instant> = None;
        let mut seen = 0usize;
        while seen < args.probes {
            if finished.load(std::sync::atomic::Ordering::Relaxed) {
                let f = *finished_at.get_or_insert_with(Instant::now);
                if f.elapsed() > deadline_after_finish {
                    break;
                }
            }
            let (code, body) = reader.get(
                &format!("/api/v1/changes?since={cursor}&wait=1000&limit=10000&names=probe_seen"),
                &bearer,
            )?;
            let now = Instant::now();
            if code != 200 {
                bail!("GET /api/v1/changes: HTTP {code}");
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            cursor = v["next"].as_u64().unwrap_or(cursor);
            for c in v["changes"].as_array().into_iter().flatten() {
                let Some(id) = c["cause"]["message_id"].as_str() else {
                    continue;
                };
                if c["name"] != "probe_seen" {
                    continue;
                }
                if let Some((t, acked)) = sent.lock().unwrap_or_else(|p| p.into_inner()).remove(id)
                {
                    seen += 1;
                    from_send.push((now - t).as_secs_f64() * 1e3);
                    if let Some(a) = acked {
                        from_ack.push(now.saturating_duration_since(a).as_secs_f64() * 1e3);
                    }
                }
            }
            if done.load(std::sync::atomic::Ordering::Relaxed) && seen >= args.probes {
                break;
            }
        }
        sender
            .join()
            .unwrap_or_else(|_| bail!("probe sender panicked"))?;
        Ok(())
    })?;
    Ok(format!(
        "probes={} seen={} visible_after_send_ms {} visible_after_ack_ms {}",
        args.probes,
        from_send.len(),
        percentiles(from_send),
        percentiles(from_ack)
    ))
}
