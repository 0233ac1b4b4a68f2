//! Identity-resolution benchmarks: link throughput, lookup latency and memory per profile.
//!
//! ```text
//! cargo run --profile bench -p portrait-core --example identity_bench -- apply  [--people N] [--lookups N] [--shape single|three]
//! cargo run --profile bench -p portrait-core --example identity_bench -- kernel [--people N] [--lookups N] [--hasher fold|sip]
//! ```
//!
//! Two measurements, kept apart on purpose:
//!
//! * `apply`: the real path. N people, each with a user id, a mainland phone and a UUID-shaped
//!   anonymous id, go through `ProfileBook::apply` as `Message`s (default 10M people = 30M
//!   links). Messages are built in chunks outside the timed region, so the figure is
//!   `apply` alone; building them is timed separately. With `--shape three` each person arrives
//!   as three messages (anonymous page view, sign-in linking user id and anonymous id, then the
//!   phone), so two of every three applies link into an existing profile. Then `by_identifier`
//!   latency over random identifiers, and VmRSS per profile.
//! * `kernel`: the index-building core that `apply` performs per new person, without the
//!   `Message`/`Profile` objects: hash each identifier to the same 128-bit xxh3 key as
//!   `ProfileBook` (`type`, NUL, `value`), look it up in a `HashMap<u128, u32>` and insert it
//!   under a dense id. Default 33.4M people × 3 = 100M links. The map hashes keys with
//!   `portrait_core::hash::KeyBuild`, as `ProfileBook`'s index does; `--hasher sip` uses the
//!   std SipHash instead, to show what the hasher costs.
//!
//! `--compact-check` (apply) clones the finished book and reports the clone's RSS: the live size
//! without the allocator fragmentation of the as-grown book (needs twice the memory).
//!
//! `--max-rss-gb` (default 16) aborts before the process grows past that much resident memory.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

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
            let shape = opt("--shape").unwrap_or("single");
            let compact = args.iter().any(|a| a == "--compact-check");
            apply(
                num("--people", 10_000_000),
                num("--lookups", 1_000_000),
                shape,
                compact,
                max_rss_kb,
            )
        }
        "kernel" => {
            let hasher = opt("--hasher").unwrap_or("fold");
            kernel(
                num("--people", 33_400_000),
                num("--lookups", 1_000_000),
                hasher,
                max_rss_kb,
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

fn apply(people: u64, lookups: u64, shape: &str, compact: bool, max_rss_kb: u64) {
    let total = if shape == "single" {
        people
    } else {
        3 * people
    };
    println!(
        "mode: apply (ProfileBook::apply on Message values), shape {shape}: {people} people, \
         {total} messages, {} identifier links",
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
    let wall = Instant::now();
    let mut n = 0;
    while n < total {
        let to = (n + CHUNK as u64).min(total);
        let t = Instant::now();
        let chunk = messages(shape, people, n, to);
        build += t.elapsed();
        let (c0, t) = (cpu(), Instant::now());
        for (i, m) in chunk.iter().enumerate() {
            book.apply(m, n + i as u64);
        }
        applying += t.elapsed();
        let c1 = cpu();
        apply_user += c1.0 - c0.0;
        apply_sys += c1.1 - c0.1;
        n = to;
        if n % (CHUNK as u64 * 32) == 0 {
            guard(max_rss_kb);
        }
    }
    let wall = wall.elapsed();
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
        "ProfileBook::apply".into(),
        format!("{:.2}", secs(applying)),
        format!(
            "{:.2} M links/s, {:.0} ns/message; {}",
            3.0 * people as f64 / secs(applying) / 1e6,
            secs(applying) * 1e9 / total as f64,
            cpu_note((0.0, 0.0), (apply_user, apply_sys))
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
        "after reserve (index control bytes touched)".into(),
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
        "  peak VmHWM {:.0} MB; load average now {}",
        mb(status_kb("VmHWM:")),
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

/// The same 128-bit key `ProfileBook` uses for an identifier.
fn key(kind: &str, value: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(kind.as_bytes());
    h.update(&[0]);
    h.update(value.as_bytes());
    h.digest128()
}

fn kernel(people: u64, lookups: u64, hasher: &str, max_rss_kb: u64) {
    match hasher {
        "fold" => kernel_with(
            people,
            lookups,
            portrait_core::hash::KeyBuild::default(),
            "portrait_core::hash::KeyBuild (xor-fold of the xxh3 key, as ProfileBook)",
            max_rss_kb,
        ),
        "sip" => kernel_with(
            people,
            lookups,
            std::hash::RandomState::new(),
            "std SipHash-1-3 (ProfileBook before 6d86e16)",
            max_rss_kb,
        ),
        other => panic!("unknown hasher `{other}`: use `fold` or `sip`"),
    }
}

fn kernel_with<S: BuildHasher>(people: u64, lookups: u64, hasher: S, label: &str, max_rss_kb: u64) {
    let links = 3 * people;
    println!(
        "mode: kernel (index build only: xxh3-128 key + HashMap<u128, u32> get/insert + dense id; \
         no Message, no Profile), hasher {label}: {people} people, {links} links"
    );
    const KINDS: [&str; 3] = ["user_id", "phone", "anonymous_id"];
    let rss0 = rss_kb();
    let t = Instant::now();
    let mut index: HashMap<u128, u32, S> = HashMap::with_hasher(hasher);
    index.reserve(links as usize);
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
    for i in 0..people {
        fill(i, &mut bufs);
        sink = sink.wrapping_add(bufs[2].len());
    }
    black_box(sink);
    let gen = t.elapsed();

    let (c0, t) = (cpu(), Instant::now());
    let mut next: u32 = 0;
    for i in 0..people {
        fill(i, &mut bufs);
        let keys = [
            key(KINDS[0], &bufs[0]),
            key(KINDS[1], &bufs[1]),
            key(KINDS[2], &bufs[2]),
        ];
        // As apply: find the profiles the identifiers already belong to, else allocate.
        let found = keys.iter().find_map(|k| index.get(k).copied());
        let id = found.unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        for k in keys {
            index.insert(k, id);
        }
        if i % (1 << 22) == 0 {
            guard(max_rss_kb);
        }
    }
    let total = t.elapsed();
    let build_cpu = cpu_note(c0, cpu());
    // Hash-only pass, to split the time.
    let t = Instant::now();
    let mut acc = 0u128;
    for i in 0..people {
        fill(i, &mut bufs);
        acc ^= key(KINDS[0], &bufs[0]) ^ key(KINDS[1], &bufs[1]) ^ key(KINDS[2], &bufs[2]);
    }
    black_box(acc);
    let hashing = t.elapsed();
    assert_eq!(index.len() as u64, links);
    assert_eq!(next as u64, people);
    let rss1 = rss_kb();
    let map = secs(total) - secs(hashing);
    let mut table = Table::new(&["step", "seconds", "rate"]);
    let rate = |d: f64| format!("{:.2} M links/s", links as f64 / d / 1e6);
    table.row(vec![
        format!("reserve({links})"),
        format!("{:.2}", secs(reserve)),
        String::new(),
    ]);
    table.row(vec![
        "format values only".into(),
        format!("{:.2}", secs(gen)),
        String::new(),
    ]);
    table.row(vec![
        "format + xxh3 keys only".into(),
        format!("{:.2}", secs(hashing)),
        rate(secs(hashing)),
    ]);
    table.row(vec![
        "index build: format + key + get + insert".into(),
        format!("{:.2}", secs(total)),
        format!("{}; {build_cpu}", rate(secs(total))),
    ]);
    table.row(vec![
        "index build minus format + key".into(),
        format!("{map:.2}"),
        rate(map),
    ]);
    table.print();
    println!(
        "  memory: VmRSS {:.0} MB -> {:.0} MB, {:.1} bytes per link (capacity {}); load average now {}",
        mb(rss0),
        mb(rss1),
        (rss1 - rss0) as f64 * 1024.0 / links as f64,
        index.capacity(),
        loadavg()
    );

    let inputs: Vec<u128> = (0..lookups)
        .map(|i| {
            let r = splitmix(i ^ 0xabcdef);
            let (p, k) = (r % people, (r >> 40) % 3);
            let id = identifier(p, k);
            key(&id.kind, &id.value)
        })
        .collect();
    println!(
        "HashMap::get over {lookups} random existing keys (key precomputed) at {links} links:"
    );
    latency(&inputs, |k| index.get(k).copied());
    std::mem::forget(index);
}
