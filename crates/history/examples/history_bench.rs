//! Tag history benchmark (run in release):
//!
//! ```text
//! cargo run --release -p portrait-history --example history_bench [-- --big 100000000 --small 10000000 --days 90]
//! ```
//!
//! 1. A 5×5 transition matrix between two dates over `--big` profile ids (a 5-value stage
//!    tag, 80% of ids keep their value), in memory and through the snapshot files.
//! 2. A 90-day population series of one tag over `--small` profiles (about 1% of ids change
//!    value per day), and the snapshot storage per tag-value per day.
//!
//! Bitmaps are synthesized with `portrait_tagstore::synth::mix`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use portrait_history::{transition_matrix, Day, History};
use portrait_tagstore::synth::mix;
use portrait_tagstore::{RoaringBitmap, TagData};

const VALUES: [&str; 5] = ["active", "churned", "dormant", "new", "prospect"];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Value of id `i` at `day`: the day-0 value, re-drawn on the days its hash says so.
fn value(i: u64, day: u64, change_per_mille: u64) -> usize {
    let mut v = mix(i, 1) % 5;
    // Only ids whose "mover" hash is low ever change; each changes on a few days.
    if mix(i, 2) % 1000 < change_per_mille * 4 {
        for d in 1..=day {
            if mix(i, 100 + d).is_multiple_of(4) {
                v = mix(i, 1000 + d) % 5;
            }
        }
    }
    v as usize
}

fn categories(n: u64, f: impl Fn(u64) -> usize) -> Vec<(String, RoaringBitmap)> {
    let mut bms: Vec<RoaringBitmap> = (0..5).map(|_| RoaringBitmap::new()).collect();
    for i in 0..n {
        let _ = bms[f(i)].try_push(i as u32);
    }
    VALUES.iter().map(|s| s.to_string()).zip(bms).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = None;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (median(times), out.unwrap())
}

fn main() {
    let big = arg("--big", 100_000_000);
    let small = arg("--small", 10_000_000);
    let days = arg("--days", 90);
    let base = Day::from_ymd_opt(2024, 1, 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // 1. Transition matrix over `big` ids.
    let t = Instant::now();
    let universe: RoaringBitmap = {
        let mut u = RoaringBitmap::new();
        u.insert_range(0..big as u32);
        u
    };
    let a = categories(big, |i| (mix(i, 1) % 5) as usize);
    let b = categories(big, |i| {
        if mix(i, 2) % 10 < 8 {
            (mix(i, 1) % 5) as usize
        } else {
            (mix(i, 3) % 5) as usize
        }
    });
    println!(
        "synthesized 2 × 5 bitmaps over {big} ids in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (ms, cells) = time(7, || transition_matrix(&universe, &a, &universe, &b, None));
    let total: u64 = cells.iter().map(|c| c.count).sum();
    assert_eq!(total, big);
    println!(
        "transitions 5×5 over {big} ids (in memory): {ms:.1} ms median of 7 ({} cells)",
        cells.len()
    );
    let audience: RoaringBitmap = (0..big as u32).step_by(3).collect();
    let (ms, _) = time(5, || {
        transition_matrix(&universe, &a, &universe, &b, Some(&audience))
    });
    println!("transitions 5×5 within a 1/3 audience: {ms:.1} ms median of 5");
    let h = History::open(&tmp.path().join("big")).unwrap();
    let ta = TagData::enumeration(a).unwrap();
    let tb = TagData::enumeration(b).unwrap();
    let t = Instant::now();
    h.record_tags(&universe, &[("stage".into(), &ta)], base)
        .unwrap();
    let r = h
        .record_tags(
            &universe,
            &[("stage".into(), &tb)],
            base.succ_opt().unwrap(),
        )
        .unwrap();
    println!(
        "recorded 2 dates in {:.1} s (second date {} bytes)",
        t.elapsed().as_secs_f64(),
        r.bytes
    );
    drop((ta, tb));
    let (ms, _) = time(5, || {
        h.transitions("stage", base, base.succ_opt().unwrap(), None)
            .unwrap()
    });
    println!("transitions 5×5 over {big} ids from the snapshot files (read + decode + matrix): {ms:.1} ms median of 5");
    drop(h);

    // 2. Population series and storage over `small` ids.
    let h = History::open(&tmp.path().join("small")).unwrap();
    let universe: RoaringBitmap = {
        let mut u = RoaringBitmap::new();
        u.insert_range(0..small as u32);
        u
    };
    let t = Instant::now();
    let mut prev: Option<Vec<usize>> = None;
    let mut changed_total = 0u64;
    for d in 0..days {
        let vals: Vec<usize> = (0..small).map(|i| value(i, d, 10)).collect();
        if let Some(p) = &prev {
            changed_total += p.iter().zip(&vals).filter(|(x, y)| x != y).count() as u64;
        }
        let mut bms: Vec<RoaringBitmap> = (0..5).map(|_| RoaringBitmap::new()).collect();
        for (i, v) in vals.iter().enumerate() {
            let _ = bms[*v].try_push(i as u32);
        }
        let tag = TagData::enumeration(VALUES.iter().map(|s| s.to_string()).zip(bms)).unwrap();
        h.record_tags(
            &universe,
            &[("stage".into(), &tag)],
            base + chrono::Duration::days(d as i64),
        )
        .unwrap();
        prev = Some(vals);
    }
    println!(
        "recorded {days} dates of a 5-value tag over {small} ids in {:.1} s ({:.2}% of ids change value per day on average)",
        t.elapsed().as_secs_f64(),
        100.0 * changed_total as f64 / (small as f64 * (days.saturating_sub(1)).max(1) as f64)
    );
    let last = base + chrono::Duration::days(days as i64 - 1);
    let (ms, series) = time(9, || h.population("stage", base, last, None).unwrap());
    println!(
        "population series of {} dates: {ms:.2} ms median of 9",
        series.len()
    );
    let s = h.storage().unwrap();
    let universe_bytes: u64 = s.bytes; // includes the universe files
    println!(
        "storage at {small} profiles: {} files, {} bytes in all, {:.0} bytes per tag-value-day ({} tag-value-days), first day {} bytes",
        s.files,
        universe_bytes,
        s.bytes_per_tag_value_day,
        s.tag_value_days,
        h.entries("stage").unwrap().values().next().map_or(0, |e| e.bytes)
    );
    let full_first = h
        .entries("stage")
        .unwrap()
        .values()
        .next()
        .map_or(0, |e| e.bytes);
    println!(
        "without sharing/deltas every day would cost about {full_first} bytes ({:.0} bytes per tag-value-day)",
        full_first as f64 / 5.0
    );
}
