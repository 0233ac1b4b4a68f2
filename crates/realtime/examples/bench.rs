//! Kernel figures of the real-time engine, in process (no HTTP, no log):
//!
//! - `throughput PROFILES EVENTS`: one thread applies EVENTS events spread over PROFILES people
//!   with the 20 realtime tags of `bench/realtime/tags20.yaml`; prints events/s and tag-state
//!   updates/s.
//! - `memory PROFILES EVENTS_PER_PROFILE`: state for PROFILES people; prints the resident memory
//!   added per profile (VmRSS delta) and the engine's own estimate.
//!
//! `cargo run --profile bench -p portrait-realtime --example bench -- throughput 100000 2000000`

use std::time::Instant;

use portrait_realtime::{Config, Event, Realtime};

/// The `portrait` binary's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TAGS: &str = include_str!("../../../bench/realtime/tags20.yaml");
const EVENTS: [&str; 4] = [
    "Product Viewed",
    "Product Added",
    "Order Completed",
    "Product Favorited",
];
const CATEGORIES: [&str; 3] = ["护肤", "彩妆", "母婴"];
/// Events the server's worker applies between two hand-overs to the change stream.
const SLICE: u64 = 128;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn engine(now: i64) -> Realtime {
    let defs = portrait_tags::parse_defs(TAGS, "tags20.yaml").expect("definitions");
    let plan = portrait_tags::compile(&defs, &portrait_tags::Known::default())
        .expect("compile")
        .plan;
    Realtime::new(plan, Vec::new(), Config::default(), now)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("throughput", String::as_str);
    let profiles: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let n: u64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let now = portrait_core::time::now();
    let traits = |_: u32| {
        let mut m = serde_json::Map::new();
        m.insert("city".into(), "上海".into());
        m.insert("level".into(), "gold".into());
        Some(m)
    };
    let props: Vec<String> = (0..997)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i}","price":199.0,"revenue":{i},"category":"{}"}}"#,
                CATEGORIES[i % 3]
            )
        })
        .collect();
    let events = match mode {
        "memory" => u64::from(profiles) * n,
        _ => n,
    };
    let before = rss_kb();
    let mut rt = engine(now);
    let started = Instant::now();
    let person = |i: u64| match mode {
        "memory" => (i / n) as u32,
        _ => (i.wrapping_mul(2_654_435_761) % u64::from(profiles)) as u32,
    };
    for i in 0..events {
        // As the server's worker does: a slice of 128 events at a time, their states read
        // through first, their changes taken after.
        if i % SLICE == 0 {
            rt.take_changes();
            rt.warm((i..(i + SLICE).min(events)).map(person));
        }
        let p = person(i);
        let id = format!("m{i}");
        let ev = Event {
            offset: i,
            ts: now - (i % 86_400) as i64 * 1000,
            kind: "track",
            name: Some(EVENTS[(i % 4) as usize]),
            source: "app",
            properties: &props[(i % 997) as usize],
            message_id: &id,
            touches_traits: i % 10 == 0,
        };
        rt.apply(p, &[], &ev, now, &traits);
    }
    let secs = started.elapsed().as_secs_f64();
    let c = rt.counters();
    match mode {
        "memory" => {
            let after = rss_kb();
            println!(
                "profiles={profiles} events_per_profile={n} tags={} rss_added_mb={:.0} bytes_per_profile_rss={:.0} bytes_per_profile_estimate={:.0} build_s={secs:.1}",
                rt.plan().tags.len(),
                (after.saturating_sub(before)) as f64 / 1024.0,
                (after.saturating_sub(before)) as f64 * 1024.0 / f64::from(profiles),
                rt.approx_bytes() as f64 / f64::from(profiles),
            );
        }
        _ => println!(
            "profiles={profiles} events={events} tags={} seconds={secs:.2} events_per_s={:.0} tag_state_updates={} updates_per_s={:.0} evaluations_per_s={:.0} changes={}",
            rt.plan().tags.len(),
            events as f64 / secs,
            c.updates,
            c.updates as f64 / secs,
            c.evaluations as f64 / secs,
            c.changes,
        ),
    }
}
