//! Differential test: on random events (random names, sources, properties, times around the
//! window edges, ties, merged profile ids), the batch engine — the fused kernel over a Parquet
//! lake — gives exactly the reference evaluator's tag values, for a definition set that uses
//! every aggregate, every window kind, filters on properties and sources, traits-free tag → tag
//! dependencies, stages and buckets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use portrait_batch::synth::{write_events, write_profile_map, EventSpec};
use portrait_tagging::service::{evaluate_lake, BatchEngine};
use portrait_tags::compile::{compile, Known};
use portrait_tags::def::parse_defs;
use portrait_tags::eval::{reference, RefEvent, RefProfile};
use portrait_tags::value::Value;
use proptest::prelude::*;

const DEFS: &str = r#"
name: views_7d
kind: metric
value: count(event = "Product Viewed", within 7d)
---
name: spend_30d
kind: metric
value: sum(properties.revenue, event = "Order Completed", within 30d)
---
name: avg_basket
kind: metric
value: avg(properties.revenue, event = "Order Completed")
---
name: max_rev_app
kind: metric
value: max(properties.revenue + 0, source = "app")
---
name: skus
kind: metric
value: count_distinct(properties.sku, between 20d and 5d ago)
---
name: first_sku
kind: metric
value: first(properties.sku, event = "Product Viewed")
---
name: last_sku
kind: metric
value: last(properties.sku)
---
name: fav_sku
kind: metric
value: most_frequent(properties.sku, within 14 calendar days)
---
name: since_order
kind: metric
value: days_since(last(event = "Order Completed"))
---
name: stage
kind: stage
cases:
  - churned: tag.since_order > 20
  - active: count(event = "Order Completed", within 10d) >= 1 and tag.views_7d >= 2
  - new: tag.since_order is not null
  - prospect: true
---
name: big
rule: tag.spend_30d >= 300 or (tag.avg_basket > 150 and not contains(coalesce(tag.last_sku, ""), "B"))
---
name: f_bucket
kind: buckets
of: count(event = "Order Completed")
quantiles: 3
---
name: r_bucket
kind: buckets
of: tag.since_order
thresholds: [3, 10, 20]
reverse: true
"#;

/// 2024-06-30T16:00:00Z.
const AS_OF: i64 = 1_719_763_200_000;

#[derive(Debug, Clone)]
struct Ev {
    profile: u32,
    name: usize,
    source: usize,
    /// Minutes before as_of (negative: after as_of).
    minutes_ago: i64,
    revenue: Option<i64>,
    sku: Option<usize>,
    string_revenue: bool,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0u32..6,
        0usize..4,
        0usize..2,
        prop_oneof![
            // Window edges: exactly 7, 10, 30 days, and 5/20 days ago.
            Just(7 * 24 * 60),
            Just(10 * 24 * 60),
            Just(30 * 24 * 60),
            Just(5 * 24 * 60),
            Just(20 * 24 * 60),
            Just(0),
            Just(-60),
            0i64..(40 * 24 * 60),
        ],
        proptest::option::of(0i64..400),
        proptest::option::of(0usize..3),
        any::<bool>(),
    )
        .prop_map(
            |(profile, name, source, minutes_ago, revenue, sku, string_revenue)| Ev {
                profile,
                name,
                source,
                minutes_ago,
                revenue,
                sku,
                string_revenue,
            },
        )
}

const NAMES: [&str; 4] = ["Product Viewed", "Order Completed", "Product Added", "Page"];
const SOURCES: [&str; 2] = ["app", "web"];
const SKUS: [&str; 3] = ["A1", "B2", "C3"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn kernel_equals_reference(events in proptest::collection::vec(ev(), 0..60), merges in proptest::collection::vec((0u32..6, 0u32..6), 0..3)) {
        let defs = parse_defs(DEFS, "diff.yaml").expect("defs");
        let plan = compile(&defs, &Known::default()).expect("compile").plan;
        // Merges: survivor of each id (a chain resolves to its root; no cycles: merge into lower).
        let mut survivor: Vec<u32> = (0..6).collect();
        for (a, b) in merges {
            let (lo, hi) = (a.min(b), a.max(b));
            if lo != hi {
                let root = |mut x: u32, s: &Vec<u32>| { while s[x as usize] != x { x = s[x as usize]; } x };
                let (rl, rh) = (root(lo, &survivor), root(hi, &survivor));
                if rl != rh { survivor[rl.max(rh) as usize] = rl.min(rh); }
            }
        }
        let resolve = |mut x: u32| { while survivor[x as usize] != x { x = survivor[x as usize]; } x };
        let mut rows = Vec::new();
        let mut profiles: BTreeMap<u32, RefProfile> = BTreeMap::new();
        for id in 0..6u32 {
            if resolve(id) == id {
                profiles.insert(id, RefProfile { id, ..RefProfile::default() });
            }
        }
        for (i, e) in events.iter().enumerate() {
            let mut props = serde_json::Map::new();
            if let Some(r) = e.revenue {
                props.insert("revenue".into(), if e.string_revenue { serde_json::json!(r.to_string()) } else { serde_json::json!(r) });
            }
            if let Some(s) = e.sku {
                props.insert("sku".into(), serde_json::json!(SKUS[s]));
            }
            let ts = AS_OF - e.minutes_ago * 60_000;
            let offset = (i as u64 + 1) * 100;
            let kind = if e.name == 3 { "page" } else { "track" };
            rows.push(EventSpec {
                offset,
                profile_id: Some(e.profile),
                kind: kind.into(),
                name: Some(NAMES[e.name].into()),
                source: SOURCES[e.source].into(),
                timestamp_ms: ts,
                properties: serde_json::Value::Object(props.clone()).to_string(),
            });
            if let Some(p) = profiles.get_mut(&resolve(e.profile)) {
                p.events.push(RefEvent {
                    offset,
                    name: Some(NAMES[e.name].into()),
                    kind: kind.into(),
                    source: SOURCES[e.source].into(),
                    timestamp_ms: ts,
                    properties: props,
                });
            }
        }
        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), &rows).unwrap();
        let map: Vec<Option<u32>> = (0..6).map(|i| Some(resolve(i))).collect();
        write_profile_map(dir.path(), &map).unwrap();
        let computed = evaluate_lake(dir.path(), &plan, AS_OF, BatchEngine::Kernel, &|_, _| Value::Null, &mut |_| {}).unwrap();
        let refs: Vec<RefProfile> = profiles.values().cloned().collect();
        let expected = reference(&plan, &refs, AS_OF);
        prop_assert_eq!(computed.ids.clone(), refs.iter().map(|p| p.id).collect::<Vec<_>>());
        for (pi, p) in refs.iter().enumerate() {
            for (ti, t) in plan.tags.iter().enumerate() {
                let got = &computed.columns[ti].values[pi];
                let want = &expected[pi][ti];
                let same = match (got, want) {
                    (Value::Num(a), Value::Num(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    _ => got == want,
                };
                prop_assert!(same, "profile {} tag {}: batch {:?}, reference {:?}", p.id, t.name, got, want);
            }
        }
    }
}
