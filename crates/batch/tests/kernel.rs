//! The kernel on a small hand-made lake: exact values, and equality with DataFusion.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use portrait_batch::datafusion::aggregate_sql;
use portrait_batch::{aggregate, to_sql, Dialect, KernelOptions};
use portrait_tags::ir::{AggFunc, CmpOp, Column, EventField, Expr, Window};
use portrait_tags::value::{Type, Value};

fn events() -> Vec<portrait_batch::synth::EventSpec> {
    let oc = Some("Order Completed");
    let pv = Some("Product Viewed");
    vec![
        ev(
            1,
            Some(1),
            "track",
            oc,
            "web",
            AS_OF - DAY,
            r#"{"revenue": 100}"#,
        ),
        ev(
            2,
            Some(2),
            "track",
            oc,
            "app",
            AS_OF - 3 * DAY,
            r#"{"revenue": "50.5"}"#,
        ),
        ev(
            3,
            Some(1),
            "track",
            oc,
            "web",
            AS_OF - 2 * DAY,
            r#"{"revenue": "abc"}"#,
        ),
        ev(
            4,
            Some(1),
            "track",
            oc,
            "web",
            AS_OF - 7 * DAY,
            r#"{"revenue": 7}"#,
        ),
        ev(5, Some(3), "track", oc, "web", AS_OF, r#"{"revenue": 20}"#),
        ev(
            6,
            Some(3),
            "track",
            oc,
            "web",
            AS_OF + 1,
            r#"{"revenue": 999}"#,
        ),
        ev(
            7,
            Some(0),
            "track",
            pv,
            "web",
            AS_OF - 40 * DAY,
            r#"{"sku": "A"}"#,
        ),
        ev(
            8,
            Some(0),
            "track",
            pv,
            "web",
            AS_OF - 10 * DAY,
            r#"{"sku": 12}"#,
        ),
        ev(
            9,
            Some(0),
            "track",
            pv,
            "app",
            AS_OF - 10 * DAY,
            r#"{"sku": "A"}"#,
        ),
        ev(
            10,
            None,
            "track",
            oc,
            "web",
            AS_OF - DAY,
            r#"{"revenue": 1000}"#,
        ),
        ev(
            11,
            Some(4),
            "track",
            oc,
            "web",
            AS_OF - DAY,
            r#"{"revenue": 1000}"#,
        ),
        ev(
            12,
            Some(1),
            "page",
            Some("Home"),
            "web",
            AS_OF - 2 * HOUR,
            "{}",
        ),
        ev(13, Some(3), "page", None, "app", AS_OF - 11 * HOUR, "{}"),
        ev(
            14,
            Some(0),
            "track",
            pv,
            "web",
            AS_OF - 5 * DAY,
            r#"{"sku": null}"#,
        ),
        ev(
            15,
            Some(1),
            "track",
            oc,
            "app",
            AS_OF - 20 * DAY,
            r#"{"revenue": 30.25}"#,
        ),
    ]
}

/// ids 0..5: 2 was merged into 1, 4 has no survivor.
const SURVIVORS: [Option<u32>; 5] = [Some(0), Some(1), Some(1), Some(3), None];

fn aggregates() -> Vec<portrait_tags::ir::Aggregate> {
    let oc = || Some(event_is("Order Completed"));
    let revenue = || Some(prop("revenue", Type::Number));
    let sku = || Some(prop("sku", Type::Str));
    vec![
        /* 0 */ agg(AggFunc::Count, None, oc(), days(7)),
        /* 1 */ agg(AggFunc::Sum, revenue(), oc(), days(7)),
        /* 2 */ agg(AggFunc::Count, None, None, Window::All),
        /* 3 */ agg(AggFunc::LastTime, None, oc(), Window::All),
        /* 4 */ agg(AggFunc::First, sku(), None, days(30)),
        /* 5 */ agg(AggFunc::Last, sku(), None, days(30)),
        /* 6 */ agg(AggFunc::CountDistinct, sku(), None, Window::All),
        /* 7 */ agg(AggFunc::Avg, revenue(), oc(), Window::All),
        /* 8 */ agg(AggFunc::Max, revenue(), oc(), days(30)),
        /* 9 */
        agg(
            AggFunc::Count,
            None,
            Some(eq(Expr::Event(EventField::Type), s("page"))),
            Window::Calendar { days: 1 },
        ),
        /* 10 */ agg(AggFunc::FirstTime, None, None, Window::All),
        /* 11 */
        agg(
            AggFunc::Count,
            None,
            Some(Expr::Or(vec![
                event_is("Home"),
                eq(Expr::Event(EventField::Source), s("app")),
            ])),
            days(1),
        ),
        /* 12 */
        agg(
            AggFunc::Min,
            revenue(),
            Some(Expr::And(vec![
                event_is("Order Completed"),
                cmp(CmpOp::Gt, prop("revenue", Type::Number), n(25.0)),
            ])),
            Window::All,
        ),
        /* 13 */
        agg(
            AggFunc::Count,
            None,
            Some(cmp(
                CmpOp::Ge,
                Expr::Event(EventField::Timestamp),
                Expr::Lit(Value::Time(AS_OF - DAY)),
            )),
            Window::All,
        ),
    ]
}

fn nums(c: &Column) -> Vec<Option<f64>> {
    match c {
        Column::Num(v) => v.iter().map(|x| (!x.is_nan()).then_some(*x)).collect(),
        other => panic!("not a number column: {other:?}"),
    }
}

fn times(c: &Column) -> Vec<Option<i64>> {
    match c {
        Column::Time(v) => v.iter().map(|x| (*x != i64::MIN).then_some(*x)).collect(),
        other => panic!("not a time column: {other:?}"),
    }
}

fn strs(c: &Column) -> Vec<Option<String>> {
    match c {
        Column::Str(v) => v.iter().map(|x| x.as_deref().map(str::to_string)).collect(),
        other => panic!("not a str column: {other:?}"),
    }
}

fn some(v: &[f64]) -> Vec<Option<f64>> {
    v.iter().map(|x| Some(*x)).collect()
}

#[test]
fn exact_values_and_equal_to_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path(), &SURVIVORS, &events());
    let p = plan(aggregates());
    for threads in [1, 2, 3] {
        let mut calls = 0;
        let opts = KernelOptions {
            threads,
            batch_size: 4,
        };
        let got = aggregate(dir.path(), &p, AS_OF, &opts, &mut |_| calls += 1).unwrap();
        assert_eq!(got.id_space, 5);
        assert_eq!(got.live, vec![0, 1, 3]);
        assert_eq!(got.events_scanned, 15);
        assert_eq!(calls, got.files_scanned);
        let c = &got.columns;
        assert_eq!(nums(&c[0]), some(&[0.0, 3.0, 0.0, 1.0, 0.0]));
        assert_eq!(nums(&c[1]), some(&[0.0, 150.5, 0.0, 20.0, 0.0]));
        assert_eq!(nums(&c[2]), some(&[4.0, 6.0, 0.0, 2.0, 0.0]));
        assert_eq!(
            times(&c[3]),
            vec![None, Some(AS_OF - DAY), None, Some(AS_OF), None]
        );
        assert_eq!(strs(&c[4])[0].as_deref(), Some("12"));
        assert_eq!(strs(&c[5])[0].as_deref(), Some("A"));
        assert_eq!(nums(&c[6]), some(&[2.0, 0.0, 0.0, 0.0, 0.0]));
        assert_eq!(
            nums(&c[7]),
            vec![None, Some(187.75 / 4.0), None, Some(20.0), None]
        );
        assert_eq!(nums(&c[8]), vec![None, Some(100.0), None, Some(20.0), None]);
        assert_eq!(nums(&c[9]), some(&[0.0, 1.0, 0.0, 0.0, 0.0]));
        assert_eq!(
            times(&c[10]),
            vec![
                Some(AS_OF - 40 * DAY),
                Some(AS_OF - 20 * DAY),
                None,
                Some(AS_OF - 11 * HOUR),
                None
            ]
        );
        assert_eq!(nums(&c[11]), some(&[0.0, 1.0, 0.0, 1.0, 0.0]));
        assert_eq!(nums(&c[12]), vec![None, Some(30.25), None, None, None]);
        assert_eq!(nums(&c[13]), some(&[0.0, 2.0, 0.0, 2.0, 0.0]));
    }

    let kernel = aggregate(
        dir.path(),
        &p,
        AS_OF,
        &KernelOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let sql = aggregate_sql(dir.path(), &p, AS_OF).unwrap();
    assert_eq!(sql.live, kernel.live);
    for (i, (a, b)) in kernel.columns.iter().zip(&sql.columns).enumerate() {
        for id in 0..kernel.id_space {
            assert_eq!(a.get(id), b.get(id), "slot {i}, id {id}");
        }
    }
}

#[test]
fn most_frequent_ties_go_to_the_least_value() {
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path(), &SURVIVORS, &events());
    let src = Some(Expr::Event(EventField::Source));
    let p = plan(vec![agg(AggFunc::MostFrequent, src, None, Window::All)]);
    let got = aggregate(
        dir.path(),
        &p,
        AS_OF,
        &KernelOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let v = strs(&got.columns[0]);
    assert_eq!(v[0].as_deref(), Some("web"));
    assert_eq!(v[1].as_deref(), Some("web"));
    assert_eq!(
        v[3].as_deref(),
        Some("app"),
        "web and app once each: the least wins"
    );
    assert_eq!(v[2], None);
    let err = to_sql(&p, AS_OF, Dialect::DataFusion)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("slot 0") && err.contains("most_frequent"),
        "{err}"
    );
}

#[test]
fn partitions_outside_every_window_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path(), &SURVIVORS, &events());
    // Only the last 1 calendar day: one partition (2024-06-08) holds events 5, 6 and 12.
    let p = plan(vec![agg(
        AggFunc::Count,
        None,
        None,
        Window::Calendar { days: 1 },
    )]);
    let got = aggregate(
        dir.path(),
        &p,
        AS_OF,
        &KernelOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(got.files_scanned, 1);
    assert_eq!(got.events_scanned, 3);
    assert_eq!(nums(&got.columns[0]), some(&[0.0, 1.0, 0.0, 1.0, 0.0]));
}

#[test]
fn sql_has_one_line_per_slot() {
    let p = plan(aggregates());
    for d in [Dialect::DataFusion, Dialect::DuckDb, Dialect::ClickHouse] {
        let sql = to_sql(&p, AS_OF, d).unwrap();
        for i in 0..p.aggregates.len() {
            let lines: Vec<&str> = sql
                .lines()
                .filter(|l| {
                    l.contains(&format!(" AS a{i},")) || l.contains(&format!(" AS a{i} --"))
                })
                .collect();
            assert_eq!(lines.len(), 1, "{d:?} slot {i}:\n{sql}");
            assert!(lines[0].contains(&format!("-- slot {i}:")), "{sql}");
        }
        assert!(sql.contains("GROUP BY m.survivor"));
    }
    let ch = to_sql(&p, AS_OF, Dialect::ClickHouse).unwrap();
    assert!(ch.contains("countIf(") && !ch.contains("FILTER"), "{ch}");
    let df = to_sql(&p, AS_OF, Dialect::DataFusion).unwrap();
    assert!(df.contains("json_num(e.properties, 'revenue')"), "{df}");
    assert!(df.contains("e.\"date\" <= '2024-06-08'"), "{df}");
}
