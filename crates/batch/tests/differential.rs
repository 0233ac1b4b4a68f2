//! Property test: the kernel and DataFusion give the same aggregates on random small lakes.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use portrait_batch::datafusion::aggregate_sql;
use portrait_batch::synth::EventSpec;
use portrait_batch::{aggregate, KernelOptions};
use portrait_tags::ir::{AggFunc, CmpOp, EventField, Expr, Window};
use portrait_tags::value::{Type, Value};
use proptest::prelude::*;

const SURVIVORS: [Option<u32>; 6] = [Some(0), Some(1), Some(1), Some(3), None, Some(3)];

/// (profile, kind/name, source, edge, days back, hours, revenue form, sku).
type RawEvent = (Option<u32>, u8, u8, u8, i64, i64, u8, u8);

fn arb_event() -> impl Strategy<Value = RawEvent> {
    (
        prop_oneof![9 => (0u32..6).prop_map(Some), 1 => Just(None)],
        0u8..3,   // kind/name
        0u8..2,   // source
        0u8..4,   // edge delta kind
        0i64..25, // days back (some after as_of: -1)
        0i64..24, // hours
        0u8..5,   // revenue form
        0u8..4,   // sku
    )
}

fn build(raw: &[RawEvent]) -> Vec<EventSpec> {
    raw.iter()
        .enumerate()
        .map(|(i, (pid, k, src, edge, d, h, rev, sku))| {
            let (kind, name) = match k {
                0 => ("track", Some("Order Completed")),
                1 => ("track", Some("Product Viewed")),
                _ => ("page", None),
            };
            let base = AS_OF - (d - 1) * DAY;
            let ts = match edge {
                0 => base,
                1 => base + 1,
                2 => base - 1,
                _ => base - h * HOUR,
            };
            let revenue = match rev {
                0 => format!("\"revenue\": {}", i % 50),
                1 => format!("\"revenue\": \"{}.5\"", i % 7),
                2 => "\"revenue\": \"x\"".to_string(),
                3 => "\"revenue\": null".to_string(),
                _ => "\"other\": 1".to_string(),
            };
            let props = format!("{{{revenue}, \"sku\": \"s{sku}\"}}");
            ev(
                i as u64 + 1,
                *pid,
                kind,
                name,
                if *src == 0 { "web" } else { "app" },
                ts,
                &props,
            )
        })
        .collect()
}

fn the_plan() -> portrait_tags::ir::Plan {
    let oc = || Some(event_is("Order Completed"));
    let revenue = || Some(prop("revenue", Type::Number));
    let sku = || Some(prop("sku", Type::Str));
    plan(vec![
        agg(AggFunc::Count, None, oc(), days(7)),
        agg(AggFunc::Sum, revenue(), oc(), days(7)),
        agg(AggFunc::Avg, revenue(), None, Window::All),
        agg(AggFunc::Min, revenue(), None, days(14)),
        agg(AggFunc::Max, revenue(), oc(), Window::All),
        agg(AggFunc::First, sku(), None, days(30)),
        agg(
            AggFunc::Last,
            sku(),
            Some(eq(Expr::Event(EventField::Source), s("app"))),
            Window::All,
        ),
        agg(AggFunc::CountDistinct, sku(), None, days(10)),
        agg(AggFunc::LastTime, None, oc(), Window::All),
        agg(AggFunc::FirstTime, None, None, Window::Calendar { days: 3 }),
        agg(AggFunc::Count, None, None, Window::Calendar { days: 3 }),
        agg(
            AggFunc::Sum,
            revenue(),
            None,
            Window::Ago {
                from_ms: 14 * DAY,
                to_ms: 7 * DAY,
            },
        ),
        agg(
            AggFunc::Count,
            None,
            Some(Expr::Or(vec![
                eq(Expr::Event(EventField::Type), s("page")),
                cmp(CmpOp::Ge, prop("revenue", Type::Number), n(3.0)),
            ])),
            days(20),
        ),
        agg(
            AggFunc::Max,
            Some(Expr::Event(EventField::Timestamp)),
            Some(Expr::In {
                expr: Box::new(prop("sku", Type::Str)),
                list: vec![Value::Str("s1".into()), Value::Str("s2".into())],
                negated: true,
            }),
            days(21),
        ),
    ])
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn kernel_equals_datafusion(raw in proptest::collection::vec(arb_event(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        write_lake(dir.path(), &SURVIVORS, &build(&raw));
        let p = the_plan();
        let opts = KernelOptions { threads: 2, batch_size: 7 };
        let k = aggregate(dir.path(), &p, AS_OF, &opts, &mut |_| {}).unwrap();
        let d = aggregate_sql(dir.path(), &p, AS_OF).unwrap();
        prop_assert_eq!(&k.live, &d.live);
        for (i, (a, b)) in k.columns.iter().zip(&d.columns).enumerate() {
            for id in 0..k.id_space {
                let (x, y) = (a.get(id), b.get(id));
                prop_assert!(close(&x, &y), "slot {} id {}: kernel {:?} datafusion {:?}", i, id, x, y);
            }
        }
    }
}

/// A plan whose filters and arguments take the general path (`eval_event`) as well as the
/// fast ones, plus `most_frequent` (kernel only).
fn general_plan() -> portrait_tags::ir::Plan {
    use portrait_tags::ir::{ArithOp, Func};
    let sku = || prop("sku", Type::Str);
    let revenue = || prop("revenue", Type::Number);
    let mut p = the_plan();
    p.aggregates.extend(vec![
        agg(AggFunc::MostFrequent, Some(sku()), None, Window::All),
        agg(
            AggFunc::MostFrequent,
            Some(Expr::Event(EventField::Source)),
            None,
            days(9),
        ),
        agg(
            AggFunc::Count,
            None,
            Some(Expr::Call(Func::StartsWith, vec![sku(), s("s1")])),
            days(12),
        ),
        agg(
            AggFunc::CountDistinct,
            Some(prop("revenue", Type::Str)),
            None,
            Window::All,
        ),
        agg(
            AggFunc::Min,
            Some(Expr::Event(EventField::Name)),
            None,
            Window::All,
        ),
        agg(
            AggFunc::Max,
            Some(Expr::Arith(
                ArithOp::Mul,
                Box::new(revenue()),
                Box::new(n(2.0)),
            )),
            None,
            Window::All,
        ),
        agg(
            AggFunc::Count,
            None,
            Some(Expr::Between {
                expr: Box::new(revenue()),
                low: Box::new(n(2.0)),
                high: Box::new(n(10.0)),
                negated: false,
            }),
            Window::Calendar { days: 5 },
        ),
        agg(
            AggFunc::Last,
            Some(Expr::Event(EventField::Source)),
            None,
            days(6),
        ),
        agg(
            AggFunc::Sum,
            Some(revenue()),
            Some(cmp(CmpOp::Lt, n(4.0), revenue())),
            Window::All,
        ),
    ]);
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The kernel equals `portrait_tags::eval::aggregate_events` (the reference) per survivor.
    #[test]
    fn kernel_equals_reference(raw in proptest::collection::vec(arb_event(), 1..80)) {
        use portrait_tags::eval::{aggregate_events, EventRow};
        let events = build(&raw);
        let dir = tempfile::tempdir().unwrap();
        write_lake(dir.path(), &SURVIVORS, &events);
        let p = general_plan();
        let opts = KernelOptions { threads: 2, batch_size: 5 };
        let k = aggregate(dir.path(), &p, AS_OF, &opts, &mut |_| {}).unwrap();
        let maps: Vec<serde_json::Map<String, serde_json::Value>> =
            events.iter().map(|e| serde_json::from_str(&e.properties).unwrap()).collect();
        for id in 0..k.id_space {
            let mine: Vec<EventRow<'_>> = events
                .iter()
                .zip(&maps)
                .filter(|(e, _)| e.profile_id.and_then(|p| SURVIVORS[p as usize]) == Some(id as u32))
                .map(|(e, m)| EventRow {
                    name: e.name.as_deref(),
                    kind: &e.kind,
                    source: &e.source,
                    timestamp_ms: e.timestamp_ms,
                    offset: e.offset,
                    properties: m,
                })
                .collect();
            for (i, a) in p.aggregates.iter().enumerate() {
                let want = aggregate_events(a, mine.iter().copied(), AS_OF, p.time_zone);
                let got = k.columns[i].get(id);
                prop_assert!(close(&got, &want), "slot {} id {}: kernel {:?} reference {:?}", i, id, got, want);
            }
        }
    }
}
