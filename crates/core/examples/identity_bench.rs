//! Identity-resolution benchmarks: link throughput, lookup latency and memory per profile.
//!
//! ```text
//! cargo run --profile bench -p portrait-core --example identity_bench -- apply  [--people N] [--lookups N] [--shape single|three] [--via batch|parallel|apply] [--group N] [--window N]
//! cargo run --profile bench -p portrait-core --example identity_bench -- kernel [--people N] [--lookups N] [--table idindex|hashmap] [--hasher fold|sip] [--window N] [--shards N] [--arena] [--parallel N]
//! ```
//!
//! Two measurements, kept apart on purpose:
//!
//! * `apply`: the real path. N people, each with a user id, a mainland phone and a UUID-shaped
//!   anonymous id, go through the `ProfileBook` as `Message`s (default 10M people = 30M links).
//!   By default (`--via batch`) they go through `ProfileBook::apply_batch` in group commits of
//!   `--group` messages (default 10,000), as the engine applies a group commit, with a probe
//!   window of `--window` messages (default `PROBE_WINDOW`); `--via apply` calls
//!   `ProfileBook::apply` once per message instead. Messages are built in chunks outside the
//!   timed region, so the figure is applying alone; building them is timed separately. With
//!   `--shape three` each person arrives as three messages (anonymous page view, sign-in linking
//!   user id and anonymous id, then the phone), so two of every three messages link into an
//!   existing profile. Then `by_identifier` latency over random identifiers, and VmRSS per
//!   profile.
//! * `kernel`: the index-building core that `apply` performs per new person, without the
//!   `Message`/`Profile` objects: hash each identifier to a 128-bit key as `ProfileBook` does
//!   (`type`, NUL, `value` in a stack buffer, one-shot XXH3-128 with a 192-byte secret), look
//!   it up in the index and insert it under a dense id. Default 33.4M people × 3 = 100.2M links.
//!   The index is `portrait_core::hash::IdIndex`, as in `ProfileBook`, or with
//!   `--table hashmap` the `HashMap<u128, u32>` that `ProfileBook` used before. `--window N`
//!   (default 64) does what `apply_batch` does: hash the keys of N people, load their index
//!   lines back to back (`IdIndex::touch`; the `HashMap` has no such thing and looks the keys
//!   up instead), look them up, then link the people one by one, looking a key up again only
//!   if it may have been written since; `--window 0` looks up and links one person at a time,
//!   as `apply` does. The `HashMap` hashes keys with `portrait_core::hash::KeyBuild`, as
//!   `ProfileBook`'s index did; `--hasher sip` uses the std SipHash instead. `--shards N` (a
//!   power of two) splits the index into N tables by the key's top bits (each an `IdIndex`,
//!   itself 2 shards). `--parallel N` runs the product's two-thread path instead,
//!   `IdIndex::resolve_windows` in windows of N people (what `apply_batch_parallel` runs): the
//!   helper thread hashes the next window while the calling thread decides the current one
//!   against an overlay, and each thread looks up and inserts the keys of its own shard.
//!   `--arena` (implied by `--parallel`) formats every value into one buffer before the timed
//!   build, which then hashes from it (values already in memory, as in `Message`s), so the
//!   build's time is key + get + insert with nothing subtracted.
//!
//! `apply --via parallel` calls `ProfileBook::apply_batch_parallel` per group commit (windows
//! of `--window`, default `PARALLEL_WINDOW`).
//!
//! `--compact-check` (apply) clones the finished book and reports the clone's RSS: the live size
//! without the allocator fragmentation of the as-grown book (needs twice the memory).
//!
//! `--max-rss-gb` (default 16) aborts before the process grows past that much resident memory.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

use portrait_core::hash::IdIndex;
use portrait_core::profile::{PARALLEL_WINDOW, PROBE_WINDOW};
use portrait_core::{Identifier, IdentityConfig, Message, MessageKind, ProfileBook};

const BASE: i64 = 1_704_067_200_000;
const CHUNK: usize = 1 << 16;

// Unused when `identity_bench_mimalloc` includes this file as a module.
#[allow(dead_code)]
fn main() {
    run("system (glibc malloc)");
}

/// Runs the benchmark named by the command line; `allocator` is printed with the machine.
pub fn run(allocator: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("apply");
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let num = |name: &str, default: u64| -> u64 {
        opt(name).map_or(default, |v| {
            v.replace('_', "").parse().expect("a whole number")
        })
    };
    let max_rss_kb = num("--max-rss-gb", 16) * 1024 * 1024;
    println!(
        "machine: {} cores, {}; allocator {allocator}; load average at start: {}",
        cores(),
        cpu_model(),
        loadavg()
    );
    match mode {
        "apply" => {
            let via = match opt("--via").unwrap_or("batch") {
                "apply" => Via::Apply,
                "batch" => Via::Batch {
                    group: num("--group", 10_000).max(1) as usize,
                    window: num("--window", PROBE_WINDOW as u64) as usize,
                },
                "parallel" => Via::Parallel {
                    group: num("--group", 10_000).max(1) as usize,
                    window: num("--window", PARALLEL_WINDOW as u64) as usize,
                },
                other => panic!("unknown --via `{other}`: use `batch`, `parallel` or `apply`"),
            };
            apply(ApplyRun {
                people: num("--people", 10_000_000),
                lookups: num("--lookups", 1_000_000),
                shape: opt("--shape").unwrap_or("single"),
                compact: args.iter().any(|a| a == "--compact-check"),
                via,
                max_rss_kb,
            })
        }
        "kernel" => {
            let hasher = opt("--hasher").unwrap_or("fold");
            let shards = num("--shards", 1) as usize;
            assert!(shards.is_power_of_two(), "--shards must be a power of two");
            kernel(
                KernelRun {
                    table: match opt("--table").unwrap_or("idindex") {
                        "idindex" => TableKind::IdIndex,
                        "hashmap" => TableKind::HashMap,
                        other => panic!("unknown --table `{other}`: use `idindex` or `hashmap`"),
                    },
                    people: num("--people", 33_400_000),
                    lookups: num("--lookups", 1_000_000),
                    window: num("--window", 64) as usize,
                    parallel: num("--parallel", 0) as usize,
                    arena: args.iter().any(|a| a == "--arena") || opt("--parallel").is_some(),
                    shards,
                    max_rss_kb,
                },
                hasher,
            )
        }
        other => panic!("unknown mode `{other}`: use `apply` or `kernel`"),
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic people.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn user_id(i: u64) -> String {
    format!("C{i:09}")
}

fn phone(i: u64) -> String {
    format!("+8613{i:09}")
}

/// A UUID-shaped anonymous id, as analytics SDKs generate (36 characters).
fn anonymous_id(i: u64) -> String {
    let (a, b) = (splitmix(i), splitmix(i ^ 0x5555_5555_5555_5555));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The `k`th identifier (0 user id, 1 phone, 2 anonymous id) of person `i`.
fn identifier(i: u64, k: u64) -> Identifier {
    match k {
        0 => Identifier::new("user_id", user_id(i)),
        1 => Identifier::new("phone", phone(i)),
        _ => Identifier::new("anonymous_id", anonymous_id(i)),
    }
}

fn message(n: u64, person: u64, identifiers: Vec<Identifier>) -> Message {
    let user = identifiers
        .iter()
        .find(|id| id.kind == "user_id")
        .map(|id| id.value.clone());
    let anon = identifiers
        .iter()
        .find(|id| id.kind == "anonymous_id")
        .map(|id| id.value.clone());
    Message {
        kind: MessageKind::Identify,
        message_id: format!("m{n}"),
        source: 1,
        event: None,
        user_id: user,
        anonymous_id: anon,
        previous_id: None,
        group_id: None,
        timestamp: BASE + person as i64,
        received_at: BASE + n as i64,
        sent_at: None,
        original_timestamp: None,
        traits: "{}".into(),
        properties: "{}".into(),
        context: "{}".into(),
        identifiers,
    }
}

/// Messages `[from, to)` of the stream. `single`: one message per person carrying all three
/// identifiers (in priority order). `three`: per person `{anonymous_id}`, `{user_id,
/// anonymous_id}`, `{user_id, phone}`, people interleaved in blocks so profiles are revisited.
fn messages(shape: &str, people: u64, from: u64, to: u64) -> Vec<Message> {
    let chunk = CHUNK as u64;
    (from..to)
        .map(|n| match shape {
            "single" => message(n, n, (0..3).map(|k| identifier(n, k)).collect()),
            _ => {
                // Blocks of CHUNK people (the last one smaller): all first messages of the
                // block, then all second, then all third.
                let block = n / (3 * chunk);
                let size = chunk.min(people - block * chunk);
                let within = n - block * 3 * chunk;
                let (step, person) = (within / size, block * chunk + within % size);
                let ids = match step {
                    0 => vec![identifier(person, 2)],
                    1 => vec![identifier(person, 0), identifier(person, 2)],
                    _ => vec![identifier(person, 0), identifier(person, 1)],
                };
                message(n, person, ids)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers.

fn status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Minor page faults of this process so far (from /proc/self/stat).
fn minor_faults() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Anonymous memory in transparent huge pages, in kB (from /proc/self/smaps_rollup).
fn huge_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// User and system CPU seconds of this process so far (from /proc/self/stat).
fn cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| {
        after
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<f64>().ok())
    };
    // Fields 14 and 15 (utime, stime) in clock ticks; the usual USER_HZ is 100.
    (
        field(11).unwrap_or(0.0) / 100.0,
        field(12).unwrap_or(0.0) / 100.0,
    )
}

fn cpu_note(before: (f64, f64), after: (f64, f64)) -> String {
    format!(
        "CPU user {:.1} s + sys {:.1} s",
        after.0 - before.0,
        after.1 - before.1
    )
}

fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

fn guard(max_rss_kb: u64) {
    let rss = rss_kb();
    if rss > max_rss_kb {
        eprintln!("VmRSS {} MB is over the limit; stopping", rss / 1024);
        std::process::exit(2);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A Markdown table printed with aligned columns.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Self {
        Self {
            rows: vec![head.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        let width = |c: usize| {
            self.rows
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.rows[0].len()).map(width).collect();
        for (i, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("  | {} |", cells.join(" | "));
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                println!("  |-{}-|", rule.join("-|-"));
            }
        }
    }
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Nanosecond percentiles of a sample.
fn percentiles(mut ns: Vec<u64>) -> (u64, u64, u64, u64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    (at(0.5), at(0.99), at(0.999), *ns.last().unwrap_or(&0), mean)
}

/// Per-call latency of `f` over `inputs` (one Instant pair per call), batch-of-100 means, and
/// the cost of an empty Instant pair, so the reader can judge the clock's share.
fn latency<T, R>(inputs: &[T], mut f: impl FnMut(&T) -> R) {
    let mut timer = Vec::with_capacity(inputs.len());
    for _ in inputs {
        let t = Instant::now();
        timer.push(t.elapsed().as_nanos() as u64);
    }
    let mut per_call = Vec::with_capacity(inputs.len());
    for x in inputs {
        let t = Instant::now();
        black_box(f(black_box(x)));
        per_call.push(t.elapsed().as_nanos() as u64);
    }
    let mut batch = Vec::with_capacity(inputs.len() / 100);
    for chunk in inputs.chunks_exact(100) {
        let t = Instant::now();
        for x in chunk {
            black_box(f(black_box(x)));
        }
        batch.push(t.elapsed().as_nanos() as u64 / 100);
    }
    let (t50, t99, _, _, tmean) = percentiles(timer);
    println!(
        "  empty Instant pair (timer cost, included in per-call figures): p50 {t50} ns, p99 {t99} ns, mean {tmean:.0} ns"
    );
    let mut table = Table::new(&[
        "lookup timing",
        "p50 ns",
        "p99 ns",
        "p999 ns",
        "max ns",
        "mean ns",
    ]);
    for (name, sample) in [("per call", per_call), ("batch of 100, per lookup", batch)] {
        let n = sample.len();
        let (p50, p99, p999, max, mean) = percentiles(sample);
        table.row(vec![
            format!("{name} ({n} timings)"),
            p50.to_string(),
            p99.to_string(),
            p999.to_string(),
            max.to_string(),
            format!("{mean:.0}"),
        ]);
    }
    table.print();
}

// ---------------------------------------------------------------------------------------------
// `apply`: the real path.

/// How `apply` mode feeds the book.
#[derive(Clone, Copy)]
enum Via {
    /// `ProfileBook::apply`, one message at a time.
    Apply,
    /// `ProfileBook::apply_batch_window` on group commits of `group` messages.
    Batch { group: usize, window: usize },
    /// `ProfileBook::apply_batch_parallel` on group commits of `group` messages (what
    /// `apply_batch` runs for batches of `PARALLEL_MIN` messages or more).
    Parallel { group: usize, window: usize },
}

struct ApplyRun<'a> {
    people: u64,
    lookups: u64,
    shape: &'a str,
    compact: bool,
    via: Via,
    max_rss_kb: u64,
}

fn apply(run: ApplyRun) {
    let ApplyRun {
        people,
        lookups,
        shape,
        compact,
        via,
        max_rss_kb,
    } = run;
    let total = if shape == "single" {
        people
    } else {
        3 * people
    };
    let (how, build_chunk) = match via {
        Via::Apply => ("ProfileBook::apply, one message at a time".to_string(), CHUNK),
        Via::Batch { group, window } => (
            format!("ProfileBook::apply_batch, group commits of {group} messages, probe window {window}"),
            // Whole groups per built chunk, as the engine hands over whole group commits.
            group * (CHUNK / group).max(1),
        ),
        Via::Parallel { group, window } => (
            format!("ProfileBook::apply_batch_parallel, group commits of {group} messages, windows of {window}"),
            group * (CHUNK / group).max(1),
        ),
    };
    println!(
        "mode: apply ({how}), shape {shape}: {people} people, {total} messages, {} identifier links",
        3 * people
    );
    let rss0 = rss_kb();
    let mut book = ProfileBook::new(IdentityConfig::default());
    let t = Instant::now();
    book.reserve(people as usize, 3 * people as usize);
    let reserve = t.elapsed();
    let rss_reserved = rss_kb();

    let mut build = Duration::ZERO;
    let mut applying = Duration::ZERO;
    let (mut apply_user, mut apply_sys) = (0.0, 0.0);
    let mut faults = 0;
    let wall = Instant::now();
    let mut n = 0;
    let mut guarded = 0;
    while n < total {
        let to = (n + build_chunk as u64).min(total);
        let t = Instant::now();
        let chunk = messages(shape, people, n, to);
        build += t.elapsed();
        let (c0, f0, t) = (cpu(), minor_faults(), Instant::now());
        match via {
            Via::Apply => {
                for (i, m) in chunk.iter().enumerate() {
                    book.apply(m, n + i as u64);
                }
            }
            Via::Batch { group, window } | Via::Parallel { group, window } => {
                let parallel = matches!(via, Via::Parallel { .. });
                for (g, part) in chunk.chunks(group).enumerate() {
                    let first = n + (g * group) as u64;
                    let refs: Vec<(&Message, u64)> = part
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (m, first + i as u64))
                        .collect();
                    if parallel {
                        black_box(book.apply_batch_parallel(&refs, window));
                    } else {
                        black_box(book.apply_batch_window(&refs, window));
                    }
                }
            }
        }
        applying += t.elapsed();
        let c1 = cpu();
        faults += minor_faults() - f0;
        apply_user += c1.0 - c0.0;
        apply_sys += c1.1 - c0.1;
        n = to;
        if n - guarded >= (CHUNK as u64) * 32 {
            guarded = n;
            guard(max_rss_kb);
        }
    }
    let wall = wall.elapsed();
    let huge = huge_kb();
    assert_eq!(book.live() as u64, people, "one profile per person");
    assert_eq!(book.identifiers() as u64, 3 * people);
    assert_eq!(book.merges(), 0);
    let rss1 = rss_kb();

    let mut table = Table::new(&["step", "seconds", "rate"]);
    table.row(vec![
        format!("reserve({people}, {})", 3 * people),
        format!("{:.2}", secs(reserve)),
        String::new(),
    ]);
    table.row(vec![
        "build Messages (outside the timed apply)".into(),
        format!("{:.2}", secs(build)),
        format!("{:.2} M messages/s", total as f64 / secs(build) / 1e6),
    ]);
    table.row(vec![
        match via {
            Via::Apply => "ProfileBook::apply".into(),
            Via::Batch { .. } => "ProfileBook::apply_batch_window".into(),
            Via::Parallel { .. } => "ProfileBook::apply_batch_parallel".into(),
        },
        format!("{:.2}", secs(applying)),
        format!(
            "{:.2} M links/s, {:.0} ns/message; {}; {:.2} M minor faults",
            3.0 * people as f64 / secs(applying) / 1e6,
            secs(applying) * 1e9 / total as f64,
            cpu_note((0.0, 0.0), (apply_user, apply_sys)),
            faults as f64 / 1e6
        ),
    ]);
    table.row(vec![
        "wall (build + apply, chunked)".into(),
        format!("{:.2}", secs(wall)),
        String::new(),
    ]);
    table.print();
    let projected = secs(applying) * 100e6 / (3.0 * people as f64);
    println!(
        "  100M links at this rate (linear projection; a bigger index is cache-colder): {projected:.1} s"
    );
    let mut table = Table::new(&["VmRSS", "MB", "bytes per profile"]);
    table.row(vec![
        "before the book".into(),
        format!("{:.0}", mb(rss0)),
        String::new(),
    ]);
    table.row(vec![
        "after reserve (index memory written)".into(),
        format!("{:.0}", mb(rss_reserved)),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "after {people} profiles, 3 identifiers + {} event(s) each",
            total / people
        ),
        format!("{:.0}", mb(rss1)),
        format!("{:.0}", (rss1 - rss0) as f64 * 1024.0 / people as f64),
    ]);
    table.print();
    println!(
        "  peak VmHWM {:.0} MB, of it in transparent huge pages {:.0} MB; load average now {}",
        mb(status_kb("VmHWM:")),
        mb(huge),
        loadavg()
    );

    if compact {
        // A clone allocates every profile afresh, back to back: its RSS is the live size
        // without the heap fragmentation left by interleaved message allocations.
        let before = rss_kb();
        let copy = book.clone();
        let after = rss_kb();
        println!(
            "  compact check: a clone of the book adds {:.0} MB = {:.0} bytes per profile",
            mb(after - before),
            (after - before) as f64 * 1024.0 / people as f64
        );
        std::mem::forget(copy);
        guard(max_rss_kb);
    }

    // Lookups: random people, random identifier type, built before timing.
    let inputs: Vec<Identifier> = (0..lookups)
        .map(|i| {
            let r = splitmix(i ^ 0xabcdef);
            identifier(r % people, (r >> 40) % 3)
        })
        .collect();
    let hits = inputs
        .iter()
        .filter(|id| book.by_identifier(id).is_some())
        .count();
    assert_eq!(hits as u64, lookups);
    println!("by_identifier over {lookups} random existing identifiers at {people} profiles:");
    latency(&inputs, |id| book.by_identifier(id));
    // Dropping 10M boxed profiles takes seconds and measures nothing.
    std::mem::forget(book);
}

// ---------------------------------------------------------------------------------------------
// `kernel`: the index build alone.

/// A 192-byte secret, as `ProfileBook` keys its hashes with (the values do not matter here).
fn secret() -> [u8; 192] {
    let mut s = [0u8; 192];
    for (i, b) in s.iter_mut().enumerate() {
        *b = splitmix(i as u64) as u8;
    }
    s
}

/// Bytes per person in the `--arena`: user id, phone, anonymous id at fixed widths.
const WIDTHS: [usize; 3] = [10, 14, 36];
const PERSON: usize = 10 + 14 + 36;

/// [`key`] of a value given as bytes.
fn key_bytes(secret: &[u8; 192], kind: &str, value: &[u8]) -> u128 {
    let mut buf = [0u8; 256];
    let n = kind.len() + 1 + value.len();
    buf[..kind.len()].copy_from_slice(kind.as_bytes());
    buf[kind.len() + 1..n].copy_from_slice(value);
    xxhash_rust::xxh3::xxh3_128_with_secret(&buf[..n], secret)
}

/// A 128-bit key computed as `ProfileBook` computes an identifier's: `type`, NUL, `value` in a
/// stack buffer, one-shot XXH3-128 with a secret.
fn key(secret: &[u8; 192], kind: &str, value: &str) -> u128 {
    let mut buf = [0u8; 256];
    let n = kind.len() + 1 + value.len();
    buf[..kind.len()].copy_from_slice(kind.as_bytes());
    buf[kind.len() + 1..n].copy_from_slice(value.as_bytes());
    xxhash_rust::xxh3::xxh3_128_with_secret(&buf[..n], secret)
}

#[derive(Clone, Copy)]
enum TableKind {
    IdIndex,
    HashMap,
}

struct KernelRun {
    table: TableKind,
    people: u64,
    lookups: u64,
    /// People probed ahead (0: one person at a time).
    window: usize,
    /// People per window of `IdIndex::resolve_windows` (two threads, as
    /// `ProfileBook::apply_batch_parallel`); 0: the single-threaded paths.
    parallel: usize,
    /// Identifier values are formatted into an arena before the timed build, which hashes
    /// them from there (as the real path hashes values already in `Message`s).
    arena: bool,
    shards: usize,
    max_rss_kb: u64,
}

fn kernel(run: KernelRun, hasher: &str) {
    match hasher {
        "fold" => kernel_with(
            run,
            portrait_core::hash::KeyBuild::default(),
            "portrait_core::hash::KeyBuild (xor-fold of the xxh3 key, as ProfileBook)",
        ),
        "sip" => kernel_with(
            run,
            std::hash::RandomState::new(),
            "std SipHash-1-3 (ProfileBook before 6d86e16)",
        ),
        other => panic!("unknown hasher `{other}`: use `fold` or `sip`"),
    }
}

/// The index under test: `IdIndex` (as `ProfileBook`) or `HashMap<u128, u32>` (as before),
/// split into a power-of-two number of tables by the key's top bits.
struct Index<S> {
    id: Vec<IdIndex>,
    hash: Vec<HashMap<u128, u32, S>>,
    shift: u32,
}

impl<S: BuildHasher + Clone> Index<S> {
    fn new(table: TableKind, shards: usize, keys: usize, hasher: S) -> Self {
        let per = keys.div_ceil(shards);
        let (id, hash) = match table {
            TableKind::IdIndex => (
                (0..shards).map(|_| IdIndex::with_capacity(per)).collect(),
                vec![],
            ),
            TableKind::HashMap => (
                vec![],
                (0..shards)
                    .map(|_| {
                        let mut m = HashMap::with_hasher(hasher.clone());
                        m.reserve(per);
                        m
                    })
                    .collect(),
            ),
        };
        Self {
            id,
            hash,
            shift: 128 - shards.trailing_zeros(),
        }
    }

    fn shard(&self, k: u128) -> usize {
        if self.shift == 128 {
            0
        } else {
            (k >> self.shift) as usize
        }
    }

    fn get(&self, k: &u128) -> Option<u32> {
        let s = self.shard(*k);
        match self.id.get(s) {
            Some(t) => t.get(k),
            None => self.hash[s].get(k).copied(),
        }
    }

    fn insert(&mut self, k: u128, v: u32) {
        let s = self.shard(k);
        match self.id.get_mut(s) {
            Some(t) => {
                t.insert(k, v);
            }
            None => {
                self.hash[s].insert(k, v);
            }
        }
    }

    /// Loads the line of `k` without branching on it (`IdIndex`); the `HashMap` has no such
    /// thing, so it looks the key up.
    fn touch(&self, k: &u128) -> u32 {
        let s = self.shard(*k);
        match self.id.get(s) {
            Some(t) => t.touch(*k),
            None => self.hash[s].get(k).copied().unwrap_or(0),
        }
    }

    fn len(&self) -> usize {
        self.id.iter().map(IdIndex::len).sum::<usize>()
            + self.hash.iter().map(HashMap::len).sum::<usize>()
    }

    fn capacity(&self) -> usize {
        self.id.iter().map(IdIndex::capacity).sum::<usize>()
            + self.hash.iter().map(HashMap::capacity).sum::<usize>()
    }
}

fn kernel_with<S: BuildHasher + Clone>(run: KernelRun, hasher: S, label: &str) {
    let KernelRun {
        table,
        people,
        lookups,
        window,
        parallel,
        arena,
        shards,
        max_rss_kb,
    } = run;
    assert!(
        parallel == 0 || (matches!(table, TableKind::IdIndex) && shards == 1),
        "--parallel runs IdIndex::resolve_windows: --table idindex, --shards 1"
    );
    assert!(people < 1_000_000_000, "values are formatted with 9 digits");
    let links = 3 * people;
    let how = match (parallel, window) {
        (p, _) if p > 0 => format!(
            "IdIndex::resolve_windows, 2 threads, windows of {p} people (as apply_batch_parallel)"
        ),
        (_, 0) => "one person at a time (as apply)".to_string(),
        (_, w) => format!("probe window of {w} people (as apply_batch)"),
    };
    let how = if arena {
        format!("{how}, values hashed from a pre-formatted arena")
    } else {
        how
    };
    let what = match table {
        TableKind::IdIndex => "portrait_core::hash::IdIndex (as ProfileBook)".to_string(),
        TableKind::HashMap => format!("HashMap<u128, u32> (ProfileBook before), hasher {label}"),
    };
    println!(
        "mode: kernel (index build only: keyed xxh3-128 + get/insert + dense id; no Message, no \
         Profile), {how}, table {what}, {shards} shard(s): {people} people, {links} links"
    );
    const KINDS: [&str; 3] = ["user_id", "phone", "anonymous_id"];
    let secret = secret();
    let rss0 = rss_kb();
    let t = Instant::now();
    let mut index = Index::new(table, shards, links as usize, hasher);
    let reserve = t.elapsed();

    // Values are formatted into reused buffers; that time is measured separately (gen pass).
    let fill = |i: u64, bufs: &mut [String; 3]| {
        use std::fmt::Write;
        for b in bufs.iter_mut() {
            b.clear();
        }
        let _ = write!(bufs[0], "C{i:09}");
        let _ = write!(bufs[1], "+8613{i:09}");
        bufs[2].push_str(&anonymous_id(i));
    };
    let mut bufs: [String; 3] = Default::default();
    let t = Instant::now();
    let mut sink = 0usize;
    // With --arena: every person's values back to back, at fixed widths.
    let mut values: Vec<u8> = Vec::new();
    if arena {
        values.reserve_exact(people as usize * PERSON);
    }
    for i in 0..people {
        fill(i, &mut bufs);
        sink = sink.wrapping_add(bufs[2].len());
        if arena {
            for (b, w) in bufs.iter().zip(WIDTHS) {
                assert_eq!(b.len(), w);
                values.extend_from_slice(b.as_bytes());
            }
        }
    }
    black_box(sink);
    let gen = t.elapsed();
    guard(max_rss_kb);
    let values = &values;
    // The keys of person `i`, from the arena or formatted now.
    let keys_of = |i: u64, bufs: &mut [String; 3]| -> [u128; 3] {
        if arena {
            let v = &values[i as usize * PERSON..(i as usize + 1) * PERSON];
            let (a, rest) = v.split_at(WIDTHS[0]);
            let (b, c) = rest.split_at(WIDTHS[1]);
            [
                key_bytes(&secret, KINDS[0], a),
                key_bytes(&secret, KINDS[1], b),
                key_bytes(&secret, KINDS[2], c),
            ]
        } else {
            fill(i, bufs);
            [0, 1, 2].map(|c| key(&secret, KINDS[c], &bufs[c]))
        }
    };

    let (c0, f0, t) = (cpu(), minor_faults(), Instant::now());
    let mut next: u32 = 0;
    let mut allocate = || {
        next += 1;
        next - 1
    };
    if parallel > 0 {
        // As apply_batch_parallel: the product's IdIndex::resolve_windows, with the decision
        // of `apply` per person against the window's overlay and the lookups made for it.
        let windows = people.div_ceil(parallel as u64) as usize;
        let span = |w: usize| {
            let from = (w * parallel) as u64;
            from..(from + parallel as u64).min(people)
        };
        let hash = |w: usize, keys: &mut Vec<u128>| {
            let mut bufs: [String; 3] = Default::default();
            for i in span(w) {
                keys.extend(keys_of(i, &mut bufs));
            }
        };
        index.id[0].resolve_windows(windows, hash, |w, keys, hints, overlay| {
            for (ks, hs) in keys.chunks_exact(3).zip(hints.chunks_exact(3)) {
                let found = ks.iter().zip(hs).find_map(|(k, h)| overlay.get(*k).or(*h));
                let id = found.unwrap_or_else(&mut allocate);
                for &k in ks {
                    overlay.insert(k, id);
                }
            }
            if span(w).start / (1 << 22) != span(w).end / (1 << 22) {
                guard(max_rss_kb);
            }
        });
    } else if window == 0 {
        for i in 0..people {
            let keys = keys_of(i, &mut bufs);
            // As apply: find the profiles the identifiers already belong to, else allocate.
            let found = keys.iter().find_map(|k| index.get(k));
            let id = found.unwrap_or_else(&mut allocate);
            for k in keys {
                index.insert(k, id);
            }
            if i % (1 << 22) == 0 {
                guard(max_rss_kb);
            }
        }
    } else {
        // As apply_batch: keys and lookups of a window first, then link in order; a lookup
        // made ahead is used unless its key may have been written since (one-hash filter).
        let mut keys = vec![0u128; 3 * window];
        let mut hints = vec![None; 3 * window];
        let mut written = [0u64; 64];
        let bit = |k: u128| (k >> 64) as usize % 4096;
        let mut from = 0;
        while from < people {
            let to = (from + window as u64).min(people);
            let n = 3 * (to - from) as usize;
            for (j, i) in (from..to).enumerate() {
                keys[3 * j..3 * j + 3].copy_from_slice(&keys_of(i, &mut bufs));
            }
            // As apply_batch: load every key's line first (no branch waits on them), then look
            // the keys up in lines now in cache.
            let mut sink = 0u32;
            for k in &keys[..n] {
                sink ^= index.touch(k);
            }
            black_box(sink);
            for (h, k) in hints[..n].iter_mut().zip(&keys[..n]) {
                *h = index.get(k);
            }
            written.fill(0);
            for (ks, hs) in keys[..n].chunks_exact(3).zip(hints[..n].chunks_exact(3)) {
                let found = ks.iter().zip(hs).find_map(|(k, h)| {
                    let b = bit(*k);
                    if written[b / 64] & (1 << (b % 64)) != 0 {
                        index.get(k)
                    } else {
                        *h
                    }
                });
                let id = found.unwrap_or_else(&mut allocate);
                for &k in ks {
                    let b = bit(k);
                    written[b / 64] |= 1 << (b % 64);
                    index.insert(k, id);
                }
            }
            if from / (1 << 22) != to / (1 << 22) {
                guard(max_rss_kb);
            }
            from = to;
        }
    }
    let total = t.elapsed();
    let build_faults = minor_faults() - f0;
    let build_cpu = cpu_note(c0, cpu());
    // Hash-only pass, to split the time.
    let t = Instant::now();
    let mut acc = 0u128;
    for i in 0..people {
        let [a, b, c] = keys_of(i, &mut bufs);
        acc ^= a ^ b ^ c;
    }
    black_box(acc);
    let hashing = t.elapsed();
    assert_eq!(index.len() as u64, links);
    assert_eq!(next as u64, people);
    let rss1 = rss_kb();
    let huge = huge_kb();
    let mut table = Table::new(&["step", "seconds", "rate"]);
    let rate = |d: f64| format!("{:.2} M links/s", links as f64 / d / 1e6);
    table.row(vec![
        format!("reserve({links})"),
        format!("{:.2}", secs(reserve)),
        String::new(),
    ]);
    table.row(vec![
        if arena {
            "format values into the arena (not timed in the build)".into()
        } else {
            "format values only".into()
        },
        format!("{:.2}", secs(gen)),
        String::new(),
    ]);
    // With the arena nothing is formatted in the timed passes.
    let gen = if arena { Duration::ZERO } else { gen };
    table.row(vec![
        if arena {
            "keyed xxh3 keys only (from the arena)".into()
        } else {
            "format + keyed xxh3 keys only".into()
        },
        format!("{:.2}", secs(hashing)),
        rate(secs(hashing)),
    ]);
    table.row(vec![
        if arena {
            "index build: key + get + insert".into()
        } else {
            "index build: format + key + get + insert".into()
        },
        format!("{:.2}", secs(total)),
        format!(
            "{}; {build_cpu}; {:.2} M minor faults",
            rate(secs(total)),
            build_faults as f64 / 1e6
        ),
    ]);
    let keyed = secs(total) - secs(gen);
    table.row(vec![
        "index build minus format (key + get + insert)".into(),
        format!("{keyed:.2}"),
        rate(keyed),
    ]);
    let map = secs(total) - secs(hashing);
    table.row(vec![
        if parallel > 0 {
            "index build minus key (hashing overlaps on the helper: not a split)".into()
        } else {
            "index build minus format + key (get + insert)".into()
        },
        format!("{map:.2}"),
        rate(map),
    ]);
    table.print();
    println!(
        "  memory: VmRSS {:.0} MB -> {:.0} MB, {:.1} bytes per link (capacity {}), in transparent huge pages {:.0} MB; load average now {}",
        mb(rss0),
        mb(rss1),
        (rss1 - rss0) as f64 * 1024.0 / links as f64,
        index.capacity(),
        mb(huge),
        loadavg()
    );

    let inputs: Vec<u128> = (0..lookups)
        .map(|i| {
            let r = splitmix(i ^ 0xabcdef);
            let (p, k) = (r % people, (r >> 40) % 3);
            let id = identifier(p, k);
            key(&secret, &id.kind, &id.value)
        })
        .collect();
    println!("index get over {lookups} random existing keys (key precomputed) at {links} links:");
    latency(&inputs, |k| index.get(k));
    std::mem::forget(index);
}
