//! Bitmap and numeric-column benchmarks.
//!
//! Sets are built with [`portrait_tagstore::synth`] (`i ∈ set(s) ⇔ mix(i, s) % 2 == 0`, seeds
//! A=1, B=2, C=3) so `bench/bitmaps.py` measures the same sets in pyroaring and chDB.
//!
//! - `and_card_100m`: |A ∩ B| over ids 0..100M (≈50M members each): the store's `count` (flat
//!   kernel), the flat kernel on one thread, and Roaring's `intersection_len`.
//! - `a_and_b_not_c_1b`: |A ∩ B − C| over ids 0..1B through the store's `count` (flat kernel),
//!   the flat kernel on one thread, and the Roaring expression. Set `PORTRAIT_BENCH_1B=0` to skip (needs ≈0.6 GB and ~1 min to build).
//! - `numeric_10m`: range selections on a 10M-id numeric column (values 0.00..999.99) with the
//!   store's sorted runs, against a bit-sliced index (O'Neil) over the same values in cents.

use std::hint::black_box;
use std::ops::Bound;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portrait_tags::ir::{CmpOp, Expr};
use portrait_tags::value::Value;
use portrait_tagstore::flat::{and_count_with, FlatBitmap};
use portrait_tagstore::synth::{half_set, mix};
use portrait_tagstore::{count, preview, select, NumericColumn, RoaringBitmap, TagStore};

fn and_card_100m(c: &mut Criterion) {
    let n = 100_000_000;
    let a = half_set(n, 1);
    let b = half_set(n, 2);
    eprintln!(
        "100M: |A|={} |B|={} |A∩B|={}",
        a.len(),
        b.len(),
        a.intersection_len(&b)
    );
    let (fa, fb) = (FlatBitmap::new(&a), FlatBitmap::new(&b));
    let store = TagStore::new();
    let mut universe = RoaringBitmap::new();
    universe.insert_range(0..n as u32);
    store.set_universe(universe);
    store.set_bool("a", a.clone());
    store.set_bool("b", b.clone());
    let snap = store.snapshot();
    let tags: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let e = Expr::And(vec![Expr::Tag(0), Expr::Tag(1)]);
    eprintln!("100M: store count {}", count(&snap, &e, &tags).unwrap_or(0));
    let mut g = c.benchmark_group("and_card_100m");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("store_count", |bch| {
        bch.iter(|| count(&snap, black_box(&e), &tags))
    });
    g.bench_function("flat_one_thread", |bch| {
        bch.iter(|| and_count_with(&[&fa, &fb], &[], 1, usize::MAX))
    });
    g.bench_function("intersection_len", |bch| {
        bch.iter(|| black_box(&a).intersection_len(black_box(&b)))
    });
    g.finish();
}

fn three_term_1b(c: &mut Criterion) {
    if std::env::var("PORTRAIT_BENCH_1B").is_ok_and(|v| v == "0") {
        return;
    }
    let n: u64 = 1_000_000_000;
    let store = TagStore::new();
    let mut universe = RoaringBitmap::new();
    universe.insert_range(0..n as u32);
    store.set_universe(universe);
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        store.set_bool(name, half_set(n, seed));
    }
    let snap = store.snapshot();
    let tags: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let e = Expr::And(vec![
        Expr::Tag(0),
        Expr::Tag(1),
        Expr::Not(Box::new(Expr::Tag(2))),
    ]);
    eprintln!("1B: |A∩B−C|={}", count(&snap, &e, &tags).unwrap_or(0));
    let (a, b, cc) = (snap.tag("a"), snap.tag("b"), snap.tag("c"));
    let (Some(a), Some(b), Some(cc)) = (a, b, cc) else {
        return;
    };
    let (a, b, cc) = (a.present(), b.present(), cc.present());
    let mut g = c.benchmark_group("a_and_b_not_c_1b");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("store_count", |bch| {
        bch.iter(|| count(&snap, black_box(&e), &tags))
    });
    let flats: Vec<FlatBitmap> = [a, b, cc].iter().map(|x| FlatBitmap::new(x)).collect();
    g.bench_function("flat_one_thread", |bch| {
        bch.iter(|| and_count_with(&[&flats[0], &flats[1]], &[&flats[2]], 1, usize::MAX))
    });
    g.bench_function("raw_and_then_difference_len", |bch| {
        bch.iter(|| (a & b).difference_len(black_box(cc)))
    });
    g.finish();
}

/// A bit-sliced index over non-negative integers (O'Neil & Quass), for comparison.
struct Bsi {
    present: RoaringBitmap,
    slices: Vec<RoaringBitmap>,
}

impl Bsi {
    fn new(pairs: impl Iterator<Item = (u32, u64)>, bits: usize) -> Bsi {
        let mut present = Vec::new();
        let mut slices: Vec<Vec<u32>> = vec![Vec::new(); bits];
        for (id, v) in pairs {
            present.push(id);
            for (k, s) in slices.iter_mut().enumerate() {
                if v >> k & 1 == 1 {
                    s.push(id);
                }
            }
        }
        let to_bm = |v: Vec<u32>| RoaringBitmap::from_sorted_iter(v).unwrap_or_default();
        Bsi {
            present: to_bm(present),
            slices: slices.into_iter().map(to_bm).collect(),
        }
    }

    /// Ids with value ≥ c.
    fn ge(&self, c: u64) -> RoaringBitmap {
        let mut gt = RoaringBitmap::new();
        let mut eq = self.present.clone();
        for k in (0..self.slices.len()).rev() {
            if c >> k & 1 == 1 {
                eq &= &self.slices[k];
            } else {
                gt |= &eq & &self.slices[k];
                eq -= &self.slices[k];
            }
        }
        gt | eq
    }

    fn between(&self, lo: u64, hi: u64) -> RoaringBitmap {
        self.ge(lo) - self.ge(hi + 1)
    }
}

/// A range case: name, bounds in units, the same bounds in cents (inclusive).
type Case = (&'static str, Bound<f64>, Bound<f64>, u64, u64);

fn numeric_10m(c: &mut Criterion) {
    let n = 10_000_000u32;
    let cents = |i: u32| mix(u64::from(i), 7) % 100_000;
    let t = std::time::Instant::now();
    let col = NumericColumn::from_pairs((0..n).map(|i| (i, cents(i) as f64 / 100.0)));
    eprintln!("numeric 10M: column built in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let bsi = Bsi::new((0..n).map(|i| (i, cents(i))), 17);
    eprintln!("numeric 10M: BSI (17 slices) built in {:?}", t.elapsed());

    let store = TagStore::new();
    store.set_universe((0..n).collect());
    store.set_numeric("spend_90d", (0..n).map(|i| (i, cents(i) as f64 / 100.0)));
    let snap = store.snapshot();
    let tags = vec!["spend_90d".to_string()];
    let num = |x: f64| Box::new(Expr::Lit(Value::Num(x)));

    let mut g = c.benchmark_group("numeric_10m");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let cases: [Case; 4] = [
        (
            "ge_500",
            Bound::Included(500.0),
            Bound::Unbounded,
            50_000,
            99_999,
        ),
        (
            "between_100_200",
            Bound::Included(100.0),
            Bound::Included(200.0),
            10_000,
            20_000,
        ),
        ("lt_30", Bound::Unbounded, Bound::Excluded(30.0), 0, 2_999),
        ("eq_0", Bound::Included(0.0), Bound::Included(0.0), 0, 0),
    ];
    for (name, lo, hi, clo, chi) in cases {
        let runs = col.range(lo, hi);
        let bsi_res = bsi.between(clo, chi);
        assert_eq!(runs, bsi_res, "{name}: runs and BSI disagree");
        eprintln!("numeric 10M {name}: {} ids", runs.len());
        g.bench_with_input(
            BenchmarkId::new("sorted_runs_select", name),
            &(lo, hi),
            |bch, &(lo, hi)| bch.iter(|| col.range(lo, hi)),
        );
        g.bench_with_input(
            BenchmarkId::new("sorted_runs_count", name),
            &(lo, hi),
            |bch, &(lo, hi)| bch.iter(|| col.range_len(lo, hi)),
        );
        g.bench_with_input(
            BenchmarkId::new("bsi_select", name),
            &(clo, chi),
            |bch, &(clo, chi)| bch.iter(|| bsi.between(clo, chi)),
        );
    }
    let ge = Expr::Cmp(CmpOp::Ge, Box::new(Expr::Tag(0)), num(500.0));
    g.bench_function("store_select_ge_500", |bch| {
        bch.iter(|| select(&snap, black_box(&ge), &tags))
    });
    // An audience preview mixing an enum value and a wide range (the HTTP bench's third case).
    let stages = ["prospect", "new", "active", "dormant", "churned"];
    let mut by_stage = vec![RoaringBitmap::new(); stages.len()];
    for i in 0..n {
        by_stage[(mix(u64::from(i), 11) % 5) as usize].insert(i);
    }
    store
        .set_enum(
            "lifecycle",
            stages.iter().map(|s| s.to_string()).zip(by_stage).collect(),
        )
        .unwrap_or_default();
    let snap = store.snapshot();
    let tags2 = vec!["spend_90d".to_string(), "lifecycle".to_string()];
    let mixed = Expr::And(vec![
        Expr::Cmp(
            CmpOp::Eq,
            Box::new(Expr::Tag(1)),
            Box::new(Expr::Lit(Value::Str("dormant".into()))),
        ),
        Expr::Between {
            expr: Box::new(Expr::Tag(0)),
            low: num(100.0),
            high: num(300.0),
            negated: false,
        },
    ]);
    eprintln!(
        "numeric 10M: dormant and between 100 and 300: {:?}",
        preview(&snap, &mixed, &tags2, 3).map(|(c, _)| c)
    );
    g.bench_function("preview_dormant_between_100_300", |bch| {
        bch.iter(|| preview(&snap, black_box(&mixed), &tags2, 100))
    });
    g.bench_function("select_dormant_between_100_300", |bch| {
        bch.iter(|| select(&snap, black_box(&mixed), &tags2))
    });
    g.bench_function("point_read", |bch| {
        let mut i = 0u32;
        bch.iter(|| {
            i = i.wrapping_add(7_654_321) % n;
            col.get(black_box(i))
        })
    });
    g.finish();
}

/// The benchmark group (a module so the macro's undocumented function can be allowed).
mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, and_card_100m, numeric_10m, three_term_1b);
}
criterion_main!(group::benches);
