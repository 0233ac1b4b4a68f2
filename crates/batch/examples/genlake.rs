//! Writes a deterministic synthetic lake in the documented layout, for the tag benchmark.
//!
//! ```text
//! cargo run --release -p portrait-batch --example genlake -- \
//!     --events 10000000 --profiles 1000000 --days 400 --out target/bench-lake/10m
//! ```
//!
//! Mix per event: ~55% `Product Viewed`, ~20% `page`, ~8% `Product Added`, ~4% `Product
//! Favorited`, ~5% `Order Completed` with `{"revenue": …}` (one in ten as a numeric string),
//! ~3% `identify`, ~5% other track events; four sources; profile activity skewed; 2% of ids
//! retired into a survivor (merges). Events are spread over `--days` Asia/Shanghai dates
//! ending with the date of `AS_OF` (2025-06-30T23:59:59.999+08:00).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, StringBuilder, StringDictionaryBuilder,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// The benchmark's `as_of`: 2025-06-30T23:59:59.999+08:00.
const AS_OF: i64 = 1_751_299_199_999;
const DAY: i64 = 86_400_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        (((self.next() >> 11) as u128 * n as u128) >> 53) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Args {
    events: u64,
    profiles: u32,
    days: i64,
    out: PathBuf,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        events: 10_000_000,
        profiles: 1_000_000,
        days: 400,
        out: "target/bench-lake".into(),
        seed: 42,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let x = &v[i + 1];
        match v[i].as_str() {
            "--events" => a.events = x.parse().unwrap(),
            "--profiles" => a.profiles = x.parse().unwrap(),
            "--days" => a.days = x.parse().unwrap(),
            "--out" => a.out = x.into(),
            "--seed" => a.seed = x.parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_max_row_group_size(65_536)
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("message_id"), false)
        .build()
}

const SOURCES: [&str; 4] = ["web", "app_ios", "app_android", "wechat_mp"];
const PAGES: [&str; 4] = ["Home", "Category", "Search", "Product"];

/// Writes one part file of `rows` events of day `day` starting at log offset `first`.
fn write_part(
    path: &Path,
    rng: &mut Rng,
    rows: usize,
    first: u64,
    day_start: i64,
    ids: u32,
    profiles: u32,
) {
    let mut ts: Vec<i64> = (0..rows)
        .map(|_| day_start + rng.below(DAY as u64) as i64)
        .collect();
    ts.sort_unstable();
    let mut pid = Vec::with_capacity(rows);
    let mut kind = StringDictionaryBuilder::<Int32Type>::new();
    let mut name = StringDictionaryBuilder::<Int32Type>::new();
    let mut source = StringDictionaryBuilder::<Int32Type>::new();
    let mut props = StringBuilder::with_capacity(rows, rows * 40);
    let mut mid = StringBuilder::with_capacity(rows, rows * 12);
    let mut uid = StringBuilder::with_capacity(rows, rows * 10);
    for i in 0..rows {
        // Skewed activity: low ids are busier; 2% of events carry a retired id.
        let p = if rng.below(50) == 0 && ids > profiles {
            profiles + rng.below(u64::from(ids - profiles)) as u32
        } else {
            ((rng.unit().powf(1.6)) * f64::from(profiles)) as u32 % profiles
        };
        pid.push(p);
        source.append_value(SOURCES[rng.below(4) as usize]);
        let r = rng.below(100);
        let sku = rng.below(5000);
        let price = 10 + rng.below(990);
        match r {
            0..=54 => {
                kind.append_value("track");
                name.append_value("Product Viewed");
                props.append_value(format!(r#"{{"sku":"SKU-{sku}","price":{price}}}"#));
            }
            55..=74 => {
                kind.append_value("page");
                name.append_value(PAGES[rng.below(4) as usize]);
                props.append_value(format!(r#"{{"path":"/p/{sku}"}}"#));
            }
            75..=82 => {
                kind.append_value("track");
                name.append_value("Product Added");
                props.append_value(format!(
                    r#"{{"sku":"SKU-{sku}","price":{price},"quantity":{}}}"#,
                    1 + rng.below(3)
                ));
            }
            83..=86 => {
                kind.append_value("track");
                name.append_value("Product Favorited");
                props.append_value(format!(r#"{{"sku":"SKU-{sku}"}}"#));
            }
            87..=91 => {
                kind.append_value("track");
                name.append_value("Order Completed");
                let cents = 500 + rng.below(200_000);
                let rev = format!("{}.{:02}", cents / 100, cents % 100);
                if rng.below(10) == 0 {
                    props.append_value(format!(
                        r#"{{"order_id":"o{}","revenue":"{rev}"}}"#,
                        first + i as u64
                    ));
                } else {
                    props.append_value(format!(
                        r#"{{"order_id":"o{}","revenue":{rev}}}"#,
                        first + i as u64
                    ));
                }
            }
            92..=94 => {
                kind.append_value("identify");
                name.append_null();
                props.append_value("{}");
            }
            _ => {
                kind.append_value("track");
                name.append_value(if r.is_multiple_of(2) {
                    "Signed Up"
                } else {
                    "Coupon Used"
                });
                props.append_value(r#"{"channel":"organic"}"#);
            }
        }
        mid.append_value(format!("m{}", first + i as u64));
        uid.append_value(format!("u{p}"));
    }
    let n = rows;
    let tsa: ArrayRef = Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC"));
    let nulls: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; n]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(
            (first..first + n as u64).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from(pid)),
        Arc::new(UInt32Array::from(vec![1u32; n])),
        Arc::new(source.finish()),
        Arc::new(kind.finish()),
        Arc::new(name.finish()),
        Arc::new(mid.finish()),
        Arc::new(uid.finish()),
        nulls.clone(),
        nulls.clone(),
        nulls,
        tsa.clone(),
        tsa,
        Arc::new(props.finish()),
        Arc::new(StringArray::from(vec!["{}"; n])),
        Arc::new(StringArray::from(vec!["{}"; n])),
    ];
    let batch = RecordBatch::try_new(portrait_lake::event_schema(), cols).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(
        File::create(path).unwrap(),
        portrait_lake::event_schema(),
        Some(writer_props()),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn main() {
    let a = args();
    let t0 = Instant::now();
    let ids = a.profiles + a.profiles / 50;
    // profile_map: ids ≥ profiles are retired into a survivor below `profiles`.
    let mut rng = Rng(a.seed ^ 0xABCD);
    let survivors: Vec<Option<u32>> = (0..ids)
        .map(|i| {
            if i < a.profiles {
                Some(i)
            } else {
                Some(rng.below(u64::from(a.profiles)) as u32)
            }
        })
        .collect();
    portrait_batch::synth::write_profile_map(&a.out, &survivors).unwrap();
    let last_day = portrait_lake::local_day(AS_OF).unwrap();
    let per_day = a.events / a.days as u64;
    let extra = a.events % a.days as u64;
    // Plan: (day, first offset, rows) per part file.
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for d in 0..a.days {
        let day = last_day - (a.days - 1) + d;
        let mut rows = per_day + u64::from((d as u64) < extra);
        while rows > 0 {
            let r = rows.min(65_536);
            parts.push((day, offset, r as usize));
            offset += r;
            rows -= r;
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (parts, a) = (&parts, &a);
            s.spawn(move || {
                for (k, (day, first, rows)) in parts.iter().enumerate().skip(t).step_by(threads) {
                    let mut rng = Rng(a.seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
                    // Day start in Asia/Shanghai: local midnight = UTC midnight − 8h.
                    let day_start = day * DAY - 8 * 3_600_000;
                    let dir = a
                        .out
                        .join("events")
                        .join(portrait_lake::partition_of(day_start));
                    let path = dir.join(format!("part-{first:020}.parquet"));
                    write_part(&path, &mut rng, *rows, *first, day_start, ids, a.profiles);
                }
            });
        }
    });
    let bytes = dir_size(&a.out);
    println!(
        "genlake: {} events, {} profiles ({} ids), {} days, {} files, {:.1} MB in {:.1}s -> {}",
        a.events,
        a.profiles,
        ids,
        a.days,
        parts.len(),
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_size(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
