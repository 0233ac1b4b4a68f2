//! `select` and `count` against a naive per-id evaluator over random stores and expressions.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::cmp::Ordering;
use std::sync::Arc;

use portrait_tags::ir::{CmpOp, Expr};
use portrait_tags::value::Value;
use portrait_tagstore::{count, select, RoaringBitmap, Snapshot, TagData, TagStore};
use proptest::prelude::*;

const KEYS: [&str; 6] = ["潜客", "新客", "active", "1", "2", "10"];

fn names() -> Vec<String> {
    ["b0", "b1", "e0", "n0", "n1"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

// ---------- the naive evaluator ----------

fn tag_value(snap: &Snapshot, name: &str, id: u32) -> Value {
    match snap.tag(name) {
        Some(TagData::Bool(b)) => Value::Bool(b.contains(id)),
        Some(TagData::Enum(e)) => e
            .value_of(id)
            .map_or(Value::Null, |s| Value::Str(Arc::from(s))),
        Some(TagData::Numeric(c)) => c.get(id).map_or(Value::Null, Value::Num),
        None => Value::Null,
    }
}

fn value(snap: &Snapshot, tags: &[String], e: &Expr, id: u32) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Neg(x) => match value(snap, tags, x, id) {
            Value::Num(n) => Value::Num(-n),
            _ => Value::Null,
        },
        Expr::Tag(i) => tag_value(snap, &tags[*i], id),
        other => Value::Bool(truth(snap, tags, other, id)),
    }
}

/// Documented comparison: numbers numerically, strings as text, an enum label against a number
/// by parsing the label, bools false < true; anything else (and null, NaN) is not comparable.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Value::Str(x), Value::Num(y)) => x.parse::<f64>().ok()?.partial_cmp(y),
        (Value::Num(x), Value::Str(y)) => x.partial_cmp(&y.parse::<f64>().ok()?),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn truth(snap: &Snapshot, tags: &[String], e: &Expr, id: u32) -> bool {
    let val = |x: &Expr| value(snap, tags, x, id);
    match e {
        Expr::Lit(v) => v.truthy(),
        Expr::Tag(_) => val(e).truthy(),
        Expr::Not(x) => !truth(snap, tags, x, id),
        Expr::And(xs) => xs.iter().all(|x| truth(snap, tags, x, id)),
        Expr::Or(xs) => xs.iter().any(|x| truth(snap, tags, x, id)),
        Expr::Cmp(op, l, r) => match compare(&val(l), &val(r)) {
            None => false,
            Some(o) => match op {
                CmpOp::Eq => o.is_eq(),
                CmpOp::Ne => o.is_ne(),
                CmpOp::Lt => o.is_lt(),
                CmpOp::Le => o.is_le(),
                CmpOp::Gt => o.is_gt(),
                CmpOp::Ge => o.is_ge(),
            },
        },
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let v = val(expr);
            if v.is_null() {
                return false;
            }
            let hit = list.iter().any(|m| compare(&v, m) == Some(Ordering::Equal));
            hit != *negated
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            match (
                compare(&val(expr), &val(low)),
                compare(&val(expr), &val(high)),
            ) {
                (Some(a), Some(b)) => (a.is_ge() && b.is_le()) != *negated,
                _ => false,
            }
        }
        Expr::IsNull { expr, negated } => val(expr).is_null() != *negated,
        other => panic!("naive evaluator: unexpected {other:?}"),
    }
}

fn naive(snap: &Snapshot, tags: &[String], e: &Expr) -> RoaringBitmap {
    snap.universe()
        .iter()
        .filter(|&id| truth(snap, tags, e, id))
        .collect()
}

// ---------- strategies ----------

fn id() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..400, 1 => 65_500u32..65_600, 1 => 1_000_000u32..1_000_050, 1 => Just(u32::MAX)]
}

fn num() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(-1.0),
        Just(100.0),
        Just(200.0),
        Just(500.0),
        (-3i32..4).prop_map(f64::from),
        -1000.0f64..1000.0,
    ]
}

#[derive(Debug, Clone)]
struct StoreSpec {
    universe: Vec<u32>,
    b0: Vec<u32>,
    b1: Vec<u32>,
    e0: Vec<(u32, usize)>,
    n0: Vec<(u32, f64)>,
    n1: Vec<(u32, f64)>,
    retired: Vec<u32>,
}

fn store_spec() -> impl Strategy<Value = StoreSpec> {
    let universe = prop_oneof![
        prop::collection::vec(0u32..400, 0..400),
        prop::collection::vec(id(), 0..300),
    ];
    let ids = || prop::collection::vec(id(), 0..250);
    let pairs =
        || prop::collection::vec((id(), prop_oneof![9 => num(), 1 => Just(f64::NAN)]), 0..250);
    (
        universe,
        ids(),
        ids(),
        prop::collection::vec((id(), 0..KEYS.len()), 0..250),
        pairs(),
        pairs(),
        prop::collection::vec(id(), 0..4),
    )
        .prop_map(|(universe, b0, b1, e0, n0, n1, retired)| StoreSpec {
            universe,
            b0,
            b1,
            e0,
            n0,
            n1,
            retired,
        })
}

fn build(spec: &StoreSpec) -> TagStore {
    let s = TagStore::new();
    s.set_universe(spec.universe.iter().copied().collect());
    s.set_bool("b0", spec.b0.iter().copied().collect());
    s.set_bool("b1", spec.b1.iter().copied().collect());
    let mut seen = RoaringBitmap::new();
    let mut values: Vec<(String, RoaringBitmap)> = KEYS
        .iter()
        .map(|k| (k.to_string(), RoaringBitmap::new()))
        .collect();
    for &(id, k) in &spec.e0 {
        if seen.insert(id) {
            values[k].1.insert(id);
        }
    }
    s.set_enum("e0", values).unwrap();
    s.set_numeric("n0", spec.n0.iter().copied());
    s.set_numeric("n1", spec.n1.iter().copied());
    for &id in &spec.retired {
        s.retire(id);
    }
    s
}

fn lit_num() -> impl Strategy<Value = Expr> {
    prop_oneof![
        8 => num().prop_map(|x| Expr::Lit(Value::Num(x))),
        1 => (0.0f64..600.0).prop_map(|x| Expr::Neg(Box::new(Expr::Lit(Value::Num(x))))),
        1 => Just(Expr::Lit(Value::Null)),
    ]
}

fn lit_enum() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..KEYS.len()).prop_map(|k| Value::Str(Arc::from(KEYS[k]))),
        Just(Value::Str(Arc::from("zzz"))),
        Just(Value::Str(Arc::from("2"))),
        prop_oneof![Just(1.0), Just(2.0), Just(1.5), Just(10.0), Just(-1.0)].prop_map(Value::Num),
        Just(Value::Null),
    ]
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge)
    ]
}

fn cmp(op: CmpOp, tag: Expr, lit: Expr, swap: bool) -> Expr {
    if swap {
        // `lit op' tag` with the mirrored operator means the same as `tag op lit`.
        let mirrored = match op {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            o => o,
        };
        Expr::Cmp(mirrored, Box::new(lit), Box::new(tag))
    } else {
        Expr::Cmp(op, Box::new(tag), Box::new(lit))
    }
}

fn leaf() -> impl Strategy<Value = Expr> {
    let bool_tag = (0usize..2).prop_map(Expr::Tag);
    let num_tag = (3usize..5).prop_map(Expr::Tag);
    prop_oneof![
        3 => bool_tag.clone(),
        1 => any::<bool>().prop_map(|b| Expr::Lit(Value::Bool(b))),
        4 => (op(), num_tag.clone(), lit_num(), any::<bool>()).prop_map(|(o, t, l, s)| cmp(o, t, l, s)),
        3 => (op(), lit_enum(), any::<bool>()).prop_map(|(o, l, s)| cmp(o, Expr::Tag(2), Expr::Lit(l), s)),
        1 => (prop_oneof![Just(CmpOp::Eq), Just(CmpOp::Ne)], bool_tag, any::<bool>(), any::<bool>())
            .prop_map(|(o, t, b, s)| cmp(o, t, Expr::Lit(Value::Bool(b)), s)),
        2 => (num_tag.clone(), prop::collection::vec(num().prop_map(Value::Num), 0..4), any::<bool>())
            .prop_map(|(t, list, negated)| Expr::In { expr: Box::new(t), list, negated }),
        2 => (prop::collection::vec(lit_enum(), 0..4), any::<bool>())
            .prop_map(|(list, negated)| Expr::In { expr: Box::new(Expr::Tag(2)), list, negated }),
        1 => ((0usize..2).prop_map(Expr::Tag), prop::collection::vec(any::<bool>().prop_map(Value::Bool), 0..3), any::<bool>())
            .prop_map(|(t, list, negated)| Expr::In { expr: Box::new(t), list, negated }),
        3 => (num_tag, lit_num(), lit_num(), any::<bool>()).prop_map(|(t, lo, hi, negated)| Expr::Between {
            expr: Box::new(t),
            low: Box::new(lo),
            high: Box::new(hi),
            negated
        }),
        1 => (lit_enum(), lit_enum(), any::<bool>()).prop_map(|(lo, hi, negated)| Expr::Between {
            expr: Box::new(Expr::Tag(2)),
            low: Box::new(Expr::Lit(lo)),
            high: Box::new(Expr::Lit(hi)),
            negated
        }),
        2 => (0usize..5, any::<bool>())
            .prop_map(|(i, negated)| Expr::IsNull { expr: Box::new(Expr::Tag(i)), negated }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| Expr::Not(Box::new(x))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::And),
            prop::collection::vec(inner, 0..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn select_equals_naive(spec in store_spec(), e in expr()) {
        let store = build(&spec);
        let snap = store.snapshot();
        let tags = names();
        let got = select(&snap, &e, &tags).unwrap();
        let want = naive(&snap, &tags, &e);
        prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.iter().collect::<Vec<_>>(), "expr {:?}", e);
        prop_assert_eq!(count(&snap, &e, &tags).unwrap(), want.len());
    }

    #[test]
    fn count_fast_paths_agree(spec in store_spec(), a in leaf(), b in leaf(), c in leaf()) {
        let store = build(&spec);
        let snap = store.snapshot();
        let tags = names();
        let not = |x: &Expr| Expr::Not(Box::new(x.clone()));
        for e in [
            Expr::And(vec![a.clone(), b.clone()]),
            Expr::And(vec![a.clone(), not(&b)]),
            Expr::And(vec![a.clone(), b.clone(), not(&c)]),
            Expr::And(vec![not(&a), not(&b)]),
            Expr::Or(vec![a.clone(), b.clone()]),
            not(&c),
        ] {
            prop_assert_eq!(count(&snap, &e, &tags).unwrap(), naive(&snap, &tags, &e).len(), "expr {:?}", e);
        }
    }
}
