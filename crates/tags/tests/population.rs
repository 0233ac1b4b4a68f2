//! `evaluate_population` (aggregate columns in, tag columns out) agrees with the reference
//! evaluator on every case file's data.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use portrait_tags::casefile;
use portrait_tags::compile::compile;
use portrait_tags::def::parse_defs_at;
use portrait_tags::eval::{aggregate_events, evaluate_population, reference, Population, RefEvent};
use portrait_tags::ir::{Column, ProfileField, TagBody};
use portrait_tags::value::{Type, Value};

#[test]
fn population_matches_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let cf = casefile::parse(&text, "x").unwrap();
        for case in &cf.cases {
            let Ok(defs) = parse_defs_at(&case.defs, "x", case.defs_line) else {
                continue;
            };
            let Ok(compiled) = compile(&defs, &case.known) else {
                continue;
            };
            let plan = compiled.plan;
            let as_of = case.as_of;
            let tz = plan.time_zone;
            // Dense ids: the profile's position; aggregate columns built from the reference kernel.
            let n = cf.profiles.len();
            let cols: Vec<Column> = plan
                .aggregates
                .iter()
                .map(|a| {
                    let vals: Vec<Value> = cf
                        .profiles
                        .iter()
                        .map(|p| aggregate_events(a, p.events.iter().map(RefEvent::row), as_of, tz))
                        .collect();
                    match a.result_type() {
                        Type::Number => Column::Num(
                            vals.iter()
                                .map(|v| v.as_num().unwrap_or(f64::NAN))
                                .collect(),
                        ),
                        Type::Time => Column::Time(
                            vals.iter()
                                .map(|v| if let Value::Time(t) = v { *t } else { i64::MIN })
                                .collect(),
                        ),
                        Type::Bool => Column::Bool(
                            vals.iter()
                                .map(|v| {
                                    if let Value::Bool(b) = v {
                                        Some(*b)
                                    } else {
                                        None
                                    }
                                })
                                .collect(),
                        ),
                        _ => Column::Str(vals.iter().map(|v| v.as_str().map(Arc::from)).collect()),
                    }
                })
                .collect();
            let ids: Vec<u32> = (0..n as u32).rev().collect(); // any order
            let traits = |id: u32| cf.profiles.get(id as usize).map(|p| &p.traits);
            let profile = |id: u32, f: ProfileField| {
                let ts = cf.profiles[id as usize]
                    .events
                    .iter()
                    .map(|e| e.timestamp_ms)
                    .filter(|t| *t <= as_of);
                let t = match f {
                    ProfileField::FirstSeen => ts.min(),
                    ProfileField::LastSeen => ts.max(),
                };
                t.map_or(Value::Null, Value::Time)
            };
            let externals = |tag: usize, id: u32| {
                cf.profiles[id as usize]
                    .externals
                    .get(&plan.tags[tag].name)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            let pop = Population {
                ids: &ids,
                aggs: &cols,
                traits: &traits,
                profile: &profile,
                externals: &externals,
                as_of,
            };
            let got = evaluate_population(&plan, &pop);
            let want = reference(&plan, &cf.profiles, as_of);
            for (t, col) in got.iter().enumerate() {
                assert_eq!(col.name, plan.tags[t].name);
                for (pos, id) in ids.iter().enumerate() {
                    assert_eq!(
                        col.values[pos],
                        want[*id as usize][t],
                        "{} {} profile {id}",
                        path.display(),
                        col.name
                    );
                }
            }
            checked += plan
                .tags
                .iter()
                .filter(|t| !matches!(t.body, TagBody::External))
                .count();
        }
    }
    assert!(checked > 50, "only {checked} tags checked");
}

#[test]
fn eval_event_signature_and_semantics() {
    use portrait_tags::eval::{eval_event, EventRow};
    use portrait_tags::ir::{CmpOp, EventField, Expr};
    let props: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"revenue": "12.5", "paid": "true"}"#).unwrap();
    let row = EventRow {
        name: Some("Order Completed"),
        kind: "track",
        source: "app",
        timestamp_ms: 5,
        offset: 0,
        properties: &props,
    };
    let filter = Expr::And(vec![
        Expr::Cmp(
            CmpOp::Eq,
            Box::new(Expr::Event(EventField::Name)),
            Box::new(Expr::Lit(Value::Str("Order Completed".into()))),
        ),
        Expr::Property {
            path: vec!["paid".into()],
            ty: Type::Bool,
        },
        Expr::Cmp(
            CmpOp::Gt,
            Box::new(Expr::Property {
                path: vec!["revenue".into()],
                ty: Type::Number,
            }),
            Box::new(Expr::Lit(Value::Num(12.0))),
        ),
    ]);
    assert_eq!(
        eval_event(&filter, &row, 10, chrono_tz::Asia::Shanghai),
        Value::Bool(true)
    );
    let missing = Expr::Property {
        path: vec!["nope".into()],
        ty: Type::Number,
    };
    assert_eq!(eval_event(&missing, &row, 10, chrono_tz::UTC), Value::Null);
}

/// Populations above the parallel threshold are split across two threads; every row must come
/// back in order with its own value (buckets see the whole population).
#[test]
fn large_populations_are_evaluated_in_order_on_two_threads() {
    use portrait_tags::compile::{compile, Known};
    use portrait_tags::def::parse_defs;
    use portrait_tags::eval::{evaluate_population, Population};
    use portrait_tags::ir::Column;
    use portrait_tags::value::Value;
    let yaml = "name: n\nkind: metric\nvalue: count(event = \"x\")\n---\nname: double\nkind: metric\nvalue: tag.n * 2\n---\nname: odd\nrule: tag.n % 2 = 1\n---\nname: q\nkind: buckets\nof: tag.n\nquantiles: 4\n";
    let plan = compile(&parse_defs(yaml, "p.yaml").unwrap(), &Known::default())
        .unwrap()
        .plan;
    let n = 200_000u32;
    let ids: Vec<u32> = (0..n).rev().collect();
    let counts: Vec<f64> = (0..n).map(f64::from).collect();
    let aggs = vec![Column::Num(counts)];
    let pop = Population {
        ids: &ids,
        aggs: &aggs,
        traits: &|_| None,
        profile: &|_, _| Value::Null,
        externals: &|_, _| Value::Null,
        as_of: 0,
    };
    let cols = evaluate_population(&plan, &pop);
    let col = |name: &str| cols.iter().find(|c| c.name == name).unwrap();
    for (pos, id) in ids.iter().enumerate() {
        let x = f64::from(*id);
        assert_eq!(col("double").values[pos], Value::Num(2.0 * x), "row {pos}");
        assert_eq!(
            col("odd").values[pos],
            Value::Bool(id % 2 == 1),
            "row {pos}"
        );
        let bucket = 1.0 + (x / f64::from(n / 4)).floor();
        assert_eq!(col("q").values[pos], Value::Num(bucket), "row {pos}");
    }
}
