//! Audience selection: pinned cases of the lowering and its null semantics.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;

use portrait_tags::ir::{ArithOp, CmpOp, Expr, Func};
use portrait_tags::value::{Type, Value};
use portrait_tagstore::{count, sample, select, RoaringBitmap, SelectError, TagStore};

fn bm(ids: &[u32]) -> RoaringBitmap {
    ids.iter().copied().collect()
}

fn ids(b: &RoaringBitmap) -> Vec<u32> {
    b.iter().collect()
}

/// Universe 1..=10; vip {1,2,3}; stage 潜客 {1,4}, 新客 {2,5}, active {3,6}; bucket "1".."5"
/// on 1..=5; spend on 1..=6 (id 7..=10 have none).
fn store() -> (TagStore, Vec<String>) {
    let s = TagStore::new();
    s.set_universe((1..=10).collect());
    s.set_bool("vip", bm(&[1, 2, 3]));
    s.set_enum(
        "stage",
        vec![
            ("潜客".into(), bm(&[1, 4])),
            ("新客".into(), bm(&[2, 5])),
            ("active".into(), bm(&[3, 6])),
        ],
    )
    .unwrap();
    s.set_enum(
        "bucket",
        (1..=5u32).map(|i| (i.to_string(), bm(&[i]))).collect(),
    )
    .unwrap();
    s.set_numeric(
        "spend",
        [
            (1, 0.0),
            (2, 120.0),
            (3, 500.0),
            (4, 800.0),
            (5, 150.0),
            (6, 499.99),
        ],
    );
    let tags = ["vip", "stage", "bucket", "spend"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (s, tags)
}

/// A pseudo-random flag on `pct` % of ids, independent per `seed`.
fn flag(i: u32, seed: u64, pct: u64) -> bool {
    portrait_tagstore::synth::mix(u64::from(i), seed) % 100 < pct
}

fn tag(i: usize) -> Box<Expr> {
    Box::new(Expr::Tag(i))
}

fn num(x: f64) -> Box<Expr> {
    Box::new(Expr::Lit(Value::Num(x)))
}

fn text(s: &str) -> Value {
    Value::Str(Arc::from(s))
}

fn run(e: &Expr) -> Vec<u32> {
    let (s, tags) = store();
    let snap = s.snapshot();
    let got = select(&snap, e, &tags).unwrap();
    assert_eq!(count(&snap, e, &tags).unwrap(), got.len(), "count of {e:?}");
    ids(&got)
}

#[test]
fn numeric_ranges_both_sides() {
    assert_eq!(run(&Expr::Cmp(CmpOp::Ge, tag(3), num(500.0))), vec![3, 4]);
    assert_eq!(run(&Expr::Cmp(CmpOp::Le, num(500.0), tag(3))), vec![3, 4]);
    assert_eq!(run(&Expr::Cmp(CmpOp::Lt, tag(3), num(150.0))), vec![1, 2]);
    assert_eq!(run(&Expr::Cmp(CmpOp::Eq, tag(3), num(0.0))), vec![1]);
    assert_eq!(
        run(&Expr::Cmp(CmpOp::Ne, tag(3), num(0.0))),
        vec![2, 3, 4, 5, 6]
    );
    let between = Expr::Between {
        expr: tag(3),
        low: num(100.0),
        high: num(200.0),
        negated: false,
    };
    assert_eq!(run(&between), vec![2, 5]);
    let not_between = Expr::Between {
        expr: tag(3),
        low: num(100.0),
        high: num(200.0),
        negated: true,
    };
    assert_eq!(run(&not_between), vec![1, 3, 4, 6]);
}

#[test]
fn null_semantics_are_two_valued() {
    // `not (spend >= 500)` holds for ids without spend.
    let e = Expr::Not(Box::new(Expr::Cmp(CmpOp::Ge, tag(3), num(500.0))));
    assert_eq!(run(&e), vec![1, 2, 5, 6, 7, 8, 9, 10]);
    assert_eq!(
        run(&Expr::IsNull {
            expr: tag(3),
            negated: false
        }),
        vec![7, 8, 9, 10]
    );
    assert_eq!(
        run(&Expr::IsNull {
            expr: tag(1),
            negated: true
        }),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        run(&Expr::IsNull {
            expr: tag(0),
            negated: false
        }),
        Vec::<u32>::new()
    );
    let vs_null = Expr::Cmp(CmpOp::Ne, tag(3), Box::new(Expr::Lit(Value::Null)));
    assert_eq!(run(&vs_null), Vec::<u32>::new());
    let not_in = Expr::In {
        expr: tag(1),
        list: vec![text("潜客")],
        negated: true,
    };
    assert_eq!(run(&not_in), vec![2, 3, 5, 6]);
}

#[test]
fn enums_and_bools() {
    assert_eq!(
        run(&Expr::Cmp(
            CmpOp::Eq,
            tag(1),
            Box::new(Expr::Lit(text("新客")))
        )),
        vec![2, 5]
    );
    assert_eq!(
        run(&Expr::Cmp(
            CmpOp::Eq,
            tag(1),
            Box::new(Expr::Lit(text("沉睡")))
        )),
        Vec::<u32>::new()
    );
    let e = Expr::In {
        expr: tag(1),
        list: vec![text("潜客"), text("active"), Value::Null],
        negated: false,
    };
    assert_eq!(run(&e), vec![1, 3, 4, 6]);
    // Bucket numbers compare as numbers.
    assert_eq!(run(&Expr::Cmp(CmpOp::Ge, tag(2), num(4.0))), vec![4, 5]);
    assert_eq!(run(&Expr::Cmp(CmpOp::Eq, tag(2), num(3.0))), vec![3]);
    let e = Expr::Between {
        expr: tag(2),
        low: num(2.0),
        high: num(3.0),
        negated: false,
    };
    assert_eq!(run(&e), vec![2, 3]);
    assert_eq!(
        run(&Expr::Cmp(
            CmpOp::Eq,
            tag(0),
            Box::new(Expr::Lit(Value::Bool(false)))
        )),
        vec![4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(run(&Expr::Lit(Value::Bool(true))).len(), 10);
    assert_eq!(run(&Expr::Or(vec![])), Vec::<u32>::new());
    assert_eq!(run(&Expr::And(vec![])).len(), 10);
}

#[test]
fn boolean_algebra() {
    // vip and stage = 新客 and not spend >= 100  → {2}? spend(2)=120 ≥ 100, so empty; use < 130.
    let e = Expr::And(vec![
        Expr::Tag(0),
        Expr::In {
            expr: tag(1),
            list: vec![text("新客"), text("active")],
            negated: false,
        },
        Expr::Not(Box::new(Expr::Cmp(CmpOp::Ge, tag(3), num(130.0)))),
    ]);
    assert_eq!(run(&e), vec![2]);
    let e = Expr::Or(vec![
        Expr::Not(Box::new(Expr::Tag(0))),
        Expr::Cmp(CmpOp::Eq, tag(3), num(0.0)),
    ]);
    assert_eq!(run(&e), vec![1, 4, 5, 6, 7, 8, 9, 10]);
}

#[test]
fn unsupported_and_errors_name_the_problem() {
    let (s, tags) = store();
    let snap = s.snapshot();
    let trait_cmp = Expr::Cmp(
        CmpOp::Eq,
        Box::new(Expr::Trait {
            path: vec!["address".into(), "city".into()],
            ty: Type::Str,
        }),
        Box::new(Expr::Lit(text("上海"))),
    );
    let err = select(&snap, &trait_cmp, &tags).unwrap_err();
    assert!(
        matches!(&err, SelectError::Unsupported(m) if m.contains("trait `address.city`")),
        "{err}"
    );
    let arith = Expr::Cmp(
        CmpOp::Gt,
        Box::new(Expr::Arith(ArithOp::Mul, tag(3), num(2.0))),
        num(1.0),
    );
    let err = select(&snap, &arith, &tags).unwrap_err();
    assert!(
        matches!(&err, SelectError::Unsupported(m) if m.contains("arithmetic")),
        "{err}"
    );
    let call = Expr::Cmp(
        CmpOp::Lt,
        Box::new(Expr::Call(Func::DaysSince, vec![Expr::AsOf])),
        num(30.0),
    );
    assert!(
        matches!(select(&snap, &call, &tags), Err(SelectError::Unsupported(m)) if m.contains("DaysSince"))
    );
    let two_tags = Expr::Cmp(CmpOp::Eq, tag(2), tag(3));
    assert!(matches!(
        select(&snap, &two_tags, &tags),
        Err(SelectError::Unsupported(_))
    ));
    let enum_as_bool = Expr::Tag(1);
    assert!(
        matches!(select(&snap, &enum_as_bool, &tags), Err(SelectError::Unsupported(m)) if m.contains("stage"))
    );
    assert_eq!(
        select(&snap, &Expr::Tag(9), &tags),
        Err(SelectError::BadTagIndex(9))
    );
    let missing = vec!["nope".to_string()];
    assert_eq!(
        select(&snap, &Expr::Tag(0), &missing),
        Err(SelectError::UnknownTag("nope".into()))
    );
}

#[test]
fn sample_takes_the_first_ids() {
    assert_eq!(sample(&bm(&[9, 3, 7, 1]), 2), vec![1, 3]);
    assert_eq!(sample(&bm(&[5]), 10), vec![5]);
}

#[test]
fn selection_sees_a_consistent_snapshot() {
    let (s, tags) = store();
    let before = s.snapshot();
    s.set_bool("vip", bm(&[9, 10]));
    s.retire(1);
    assert_eq!(
        ids(&select(&before, &Expr::Tag(0), &tags).unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(&select(&s.snapshot(), &Expr::Tag(0), &tags).unwrap()),
        vec![9, 10]
    );
    let not_vip = Expr::Not(Box::new(Expr::Tag(0)));
    assert!(!select(&s.snapshot(), &not_vip, &tags).unwrap().contains(1));
}

#[test]
fn large_numeric_paths_agree_with_a_scan() {
    // Dense (scatter), sparse (sort) and complement paths over 200k ids.
    let s = TagStore::new();
    s.set_universe((0..200_000).collect());
    s.set_numeric(
        "x",
        (0..200_000u32)
            .filter(|i| i % 3 != 0)
            .map(|i| (i, f64::from((i * 7919) % 1000))),
    );
    let snap = s.snapshot();
    let tags = vec!["x".to_string()];
    for (lo, hi) in [
        (0.0, 5.0),
        (100.0, 899.0),
        (0.0, 999.0),
        (500.0, 500.0),
        (998.5, 2000.0),
    ] {
        let e = Expr::Between {
            expr: tag(0),
            low: num(lo),
            high: num(hi),
            negated: false,
        };
        let got = select(&snap, &e, &tags).unwrap();
        let want: RoaringBitmap = (0..200_000u32)
            .filter(|i| i % 3 != 0)
            .filter(|i| {
                let v = f64::from((i * 7919) % 1000);
                v >= lo && v <= hi
            })
            .collect();
        assert_eq!(got, want, "between {lo} and {hi}");
        assert_eq!(count(&snap, &e, &tags).unwrap(), want.len());
    }
}

/// Large numeric columns answer ranges through rank bins, and an `and` intersects a binned
/// range without materialising it: both must agree with a per-id scan.
#[test]
fn binned_ranges_inside_and_agree_with_a_scan() {
    let n = 400_000u32;
    let s = TagStore::new();
    // Ids with gaps; the numeric tag misses some of them; values with ties.
    let universe: RoaringBitmap = (0..n).filter(|i| i % 7 != 3).collect();
    s.set_universe(universe.clone());
    fn spend(i: u32) -> f64 {
        (portrait_tagstore::synth::mix(u64::from(i), 5) % 2_000) as f64 / 2.0
    }
    fn has(i: u32) -> bool {
        !flag(i, 4, 5)
    }
    s.set_bool("a", universe.iter().filter(|&i| flag(i, 1, 50)).collect());
    s.set_bool("c", universe.iter().filter(|&i| flag(i, 3, 10)).collect());
    s.set_numeric(
        "spend",
        universe
            .iter()
            .filter(|&i| !flag(i, 4, 5))
            .map(|i| (i, spend(i))),
    );
    let tags: Vec<String> = ["a", "c", "spend"].iter().map(|s| s.to_string()).collect();
    let snap = s.snapshot();
    let between = |lo: f64, hi: f64| Expr::Between {
        expr: tag(2),
        low: num(lo),
        high: num(hi),
        negated: false,
    };
    type Pred = Box<dyn Fn(u32) -> bool>;
    let cases: Vec<(Expr, Pred)> = vec![
        (
            Expr::And(vec![Expr::Tag(0), between(100.0, 300.0)]),
            Box::new(move |i| flag(i, 1, 50) && has(i) && (100.0..=300.0).contains(&spend(i))),
        ),
        (
            Expr::And(vec![
                Expr::Cmp(CmpOp::Ge, tag(2), num(500.0)),
                Expr::Not(tag(1)),
            ]),
            Box::new(move |i| has(i) && spend(i) >= 500.0 && !flag(i, 3, 10)),
        ),
        (
            Expr::And(vec![
                Expr::Tag(0),
                Expr::Cmp(CmpOp::Lt, tag(2), num(731.5)),
                Expr::Cmp(CmpOp::Gt, tag(2), num(12.5)),
            ]),
            Box::new(move |i| flag(i, 1, 50) && has(i) && spend(i) < 731.5 && spend(i) > 12.5),
        ),
        (
            Expr::And(vec![between(0.0, 999.5), Expr::Not(tag(0))]),
            Box::new(move |i| has(i) && !flag(i, 1, 50)),
        ),
        (
            Expr::And(vec![Expr::Cmp(CmpOp::Le, tag(2), num(250.0))]),
            Box::new(move |i| has(i) && spend(i) <= 250.0),
        ),
    ];
    for (e, want) in cases {
        let expected: RoaringBitmap = universe.iter().filter(|&i| want(i)).collect();
        let got = select(&snap, &e, &tags).unwrap();
        assert_eq!(got, expected, "{e:?}");
        assert_eq!(
            count(&snap, &e, &tags).unwrap(),
            expected.len(),
            "count of {e:?}"
        );
        // Previews run whole bins through the flat kernel and merge in the partial bins.
        for n in [1, 40, 100_000] {
            let (size, first) = portrait_tagstore::preview(&snap, &e, &tags, n).unwrap();
            assert_eq!(size, expected.len(), "preview size of {e:?}");
            let want: Vec<u32> = expected.iter().take(n).collect();
            assert_eq!(first, want, "preview sample of {e:?}");
        }
    }
    assert!(snap.flat_copies_bytes() > 0, "the flat path was not taken");
}

#[test]
fn flat_counts_and_previews_agree_with_a_scan() {
    // Large enough (2M-id span, ≥ 65,536 ids of work) for the flat kernels, with sparse and
    // dense chunks, and spanning > 16 chunks so the threaded split runs in release builds too.
    let n = 2_000_000u32;
    let s = TagStore::new();
    let universe: RoaringBitmap = (0..n).filter(|i| i % 11 != 4).collect();
    s.set_universe(universe.clone());
    // `rare` is sparse (array containers), `a`/`b` dense, `stage` an enum.
    s.set_bool("a", universe.iter().filter(|&i| flag(i, 1, 50)).collect());
    s.set_bool("b", universe.iter().filter(|&i| flag(i, 2, 30)).collect());
    s.set_bool("rare", universe.iter().filter(|&i| flag(i, 3, 2)).collect());
    let stage = |i: u32| ["new", "active", "dormant"][(i % 3) as usize];
    s.set_enum(
        "stage",
        ["new", "active", "dormant"]
            .iter()
            .map(|v| {
                let ids = universe.iter().filter(|&i| stage(i) == *v).collect();
                (v.to_string(), ids)
            })
            .collect(),
    )
    .unwrap();
    let tags: Vec<String> = ["a", "b", "rare", "stage"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let is = |v: &str| Expr::Cmp(CmpOp::Eq, tag(3), Box::new(Expr::Lit(text(v))));
    let not = |e: Expr| Expr::Not(Box::new(e));
    type Pred = Box<dyn Fn(u32) -> bool>;
    let cases: Vec<(Expr, Pred)> = vec![
        (
            Expr::And(vec![Expr::Tag(0), Expr::Tag(1)]),
            Box::new(move |i| flag(i, 1, 50) && flag(i, 2, 30)),
        ),
        (
            Expr::And(vec![Expr::Tag(0), Expr::Tag(1), not(Expr::Tag(2))]),
            Box::new(move |i| flag(i, 1, 50) && flag(i, 2, 30) && !flag(i, 3, 2)),
        ),
        (
            Expr::And(vec![not(Expr::Tag(0)), not(Expr::Tag(1))]),
            Box::new(move |i| !flag(i, 1, 50) && !flag(i, 2, 30)),
        ),
        (
            Expr::And(vec![Expr::Tag(2), is("active"), not(Expr::Tag(0))]),
            Box::new(move |i| flag(i, 3, 2) && stage(i) == "active" && !flag(i, 1, 50)),
        ),
        (
            Expr::And(vec![
                is("dormant"),
                Expr::Tag(0),
                Expr::Tag(1),
                not(Expr::Tag(2)),
            ]),
            Box::new(move |i| {
                stage(i) == "dormant" && flag(i, 1, 50) && flag(i, 2, 30) && !flag(i, 3, 2)
            }),
        ),
    ];
    let check = |snap: &portrait_tagstore::Snapshot, cases: &[(Expr, Pred)]| {
        for (e, want) in cases {
            let expected: RoaringBitmap = universe.iter().filter(|&i| want(i)).collect();
            assert_eq!(select(snap, e, &tags).unwrap(), expected, "{e:?}");
            assert_eq!(count(snap, e, &tags).unwrap(), expected.len(), "{e:?}");
            let (size, first) = portrait_tagstore::preview(snap, e, &tags, 25).unwrap();
            assert_eq!(size, expected.len(), "preview of {e:?}");
            assert_eq!(first, expected.iter().take(25).collect::<Vec<_>>(), "{e:?}");
        }
    };
    let snap = s.snapshot();
    check(&snap, &cases);
    assert!(snap.flat_copies_bytes() > 0, "the flat path was not taken");
    drop(snap);
    // Changing a tag in place (no reader holds the snapshot) must drop the cached copies.
    s.set_bool("a", universe.iter().filter(|&i| flag(i, 9, 40)).collect());
    let snap = s.snapshot();
    assert_eq!(snap.flat_copies_bytes(), 0);
    let e = Expr::And(vec![Expr::Tag(0), Expr::Tag(1)]);
    let expected = universe
        .iter()
        .filter(|&i| flag(i, 9, 40) && flag(i, 2, 30))
        .count() as u64;
    assert_eq!(count(&snap, &e, &tags).unwrap(), expected);
}
