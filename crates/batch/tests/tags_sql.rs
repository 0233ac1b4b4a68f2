//! Whole tags as SQL (`tags_sql`) on DataFusion against the reference evaluator, on a
//! hand-made lake with a plan compiled from YAML.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::Arc;

use common::*;
use portrait_batch::datafusion::tags_sql_datafusion;
use portrait_batch::synth::EventSpec;
use portrait_batch::{tags_sql, BatchError, Dialect};
use portrait_tags::eval::{reference, RefEvent, RefProfile};
use portrait_tags::ir::Plan;
use portrait_tags::value::Value;
use portrait_tags::{compile, parse_defs, Known};

/// id → survivor: 2 merged into 1, 5 retired without a survivor, 9 live without events.
const SURVIVORS: [Option<u32>; 12] = [
    Some(0),
    Some(1),
    Some(1),
    Some(3),
    Some(4),
    None,
    Some(6),
    Some(7),
    Some(8),
    Some(9),
    Some(10),
    Some(11),
];

const TAGS: &str = r#"
name: high_intent
kind: rule
rule: >
  count(event = "Product Viewed", within 7d) >= 2
  and (count(event = "Product Added", within 7d) >= 1 or count(event = "Order Completed", within 7d) >= 1)
---
name: spend_30d
kind: metric
value: sum(properties.revenue, event = "Order Completed", within 30d)
---
name: lifecycle
kind: stage
cases:
  - churned:  days_since(last(event = "Order Completed")) > 20
  - active:   count(event = "Order Completed", within 7d) >= 1 and count(event = "Order Completed") >= 2
  - new:      count(event = "Order Completed") >= 1
---
name: rfm_r
kind: buckets
of: days_since(last(event = "Order Completed"))
quantiles: 3
reverse: true
---
name: rfm_m
kind: buckets
of: sum(properties.revenue, event = "Order Completed")
quantiles: 4
---
name: rfm_f
kind: buckets
of: count(event = "Order Completed", within 30d)
thresholds: [1, 2, 4]
---
name: avg_per_view
kind: metric
value: sum(properties.revenue, event = "Order Completed") / count(event = "Product Viewed") + 0
---
name: best_active
rule: tag.rfm_m >= 3 and tag.lifecycle in ("active", "new") and not tag.high_intent
---
name: spend_tier
kind: stage
cases:
  - big:   tag.spend_30d >= 100
  - small: tag.spend_30d > 0
---
name: days_seen
kind: metric
value: days_since(first_seen) - days_since(last_seen)
---
name: tier_bucket
kind: buckets
of: coalesce(tag.avg_per_view, -1) * 2
quantiles: 2
---
name: first_sku
kind: metric
value: lower(first(properties.sku, event = "Product Viewed"))
"#;

fn compiled(yaml: &str) -> Plan {
    let defs = parse_defs(yaml, "tags.yaml").unwrap();
    compile(&defs, &Known::default()).unwrap().plan
}

/// A small deterministic generator (LCG) so that quantiles have ties and spread.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn events() -> Vec<EventSpec> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut push = |pid: Option<u32>, name: &str, ts: i64, props: String| {
        offset += 1;
        let kind = if name == "Home" { "page" } else { "track" };
        out.push(ev(offset, pid, kind, Some(name), "web", ts, &props));
    };
    // Random activity of ids 0..=8 (id 9 has none; 5 is retired, 2 re-keys to 1).
    for _ in 0..260 {
        let pid = rng.next(9) as u32;
        let name = [
            "Order Completed",
            "Product Viewed",
            "Product Viewed",
            "Product Added",
            "Home",
        ][rng.next(5) as usize];
        let ts = AS_OF - rng.next(45) as i64 * DAY - rng.next(24) as i64 * HOUR + 1;
        let props = match rng.next(6) {
            0 => r#"{"revenue": "12.5", "sku": "A1"}"#.to_string(),
            1 => r#"{"sku": "b2"}"#.to_string(),
            2 => r#"{"revenue": null, "sku": 3}"#.to_string(),
            _ => format!(
                r#"{{"revenue": {}, "sku": "S{}"}}"#,
                rng.next(8) * 25,
                rng.next(3)
            ),
        };
        push(Some(pid), name, ts, props);
    }
    // Edges: an order exactly at as_of, one just after it (does not exist), one exactly 30
    // days before (outside `within 30d`), and an event without a profile.
    push(
        Some(10),
        "Order Completed",
        AS_OF,
        r#"{"revenue": 100}"#.into(),
    );
    push(
        Some(10),
        "Order Completed",
        AS_OF + 1,
        r#"{"revenue": 1000}"#.into(),
    );
    push(
        Some(11),
        "Order Completed",
        AS_OF - 30 * DAY,
        r#"{"revenue": 40}"#.into(),
    );
    push(
        None,
        "Order Completed",
        AS_OF - DAY,
        r#"{"revenue": 5}"#.into(),
    );
    out
}

/// The live profiles with their events re-keyed to the survivor, as the reference sees them.
fn ref_profiles(events: &[EventSpec]) -> Vec<RefProfile> {
    (0..SURVIVORS.len() as u32)
        .filter(|i| SURVIVORS[*i as usize] == Some(*i))
        .map(|id| RefProfile {
            id,
            events: events
                .iter()
                .filter(|e| {
                    e.profile_id
                        .and_then(|p| SURVIVORS[p as usize])
                        .is_some_and(|s| s == id)
                })
                .map(|e| RefEvent {
                    offset: e.offset,
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    source: e.source.clone(),
                    timestamp_ms: e.timestamp_ms,
                    properties: serde_json::from_str(&e.properties).unwrap(),
                })
                .collect(),
            ..RefProfile::default()
        })
        .collect()
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[test]
fn tags_sql_on_datafusion_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let evs = events();
    write_lake(dir.path(), &SURVIVORS, &evs);
    let plan = compiled(TAGS);
    assert_eq!(plan.tags.len(), 12);

    let got = tags_sql_datafusion(dir.path(), &plan, AS_OF).unwrap();
    let profiles = ref_profiles(&evs);
    let want = reference(&plan, &profiles, AS_OF);

    let ids: Vec<u32> = profiles.iter().map(|p| p.id).collect();
    assert_eq!(got.ids, ids);
    assert_eq!(got.ids, vec![0, 1, 3, 4, 6, 7, 8, 9, 10, 11]);
    for (t, tag) in plan.tags.iter().enumerate() {
        assert_eq!(got.columns[t].name, tag.name);
        for (r, id) in ids.iter().enumerate() {
            let (g, w) = (&got.columns[t].values[r], &want[r][t]);
            assert!(
                close(g, w),
                "tag {} of profile {id}: sql {g:?}, reference {w:?}",
                tag.name
            );
        }
    }

    // The data exercises what it should: every quantile bucket occurs, some nulls and ties.
    let col = |name: &str| &got.columns[plan.tag_index(name).unwrap()].values;
    let buckets: std::collections::BTreeSet<i64> = col("rfm_m")
        .iter()
        .filter_map(|v| v.as_num().map(|x| x as i64))
        .collect();
    assert_eq!(buckets.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // Profile 9 has no events: count-based values are 0 (rfm_m bucket 1), recency is null.
    let p9 = ids.iter().position(|i| *i == 9).unwrap();
    assert_eq!(col("rfm_m")[p9], Value::Num(1.0));
    assert_eq!(col("rfm_r")[p9], Value::Null);
    assert_eq!(col("lifecycle")[p9], Value::Null);
    assert_eq!(col("high_intent")[p9], Value::Bool(false));
    assert_eq!(col("avg_per_view")[p9], Value::Null);
    assert_eq!(col("tier_bucket")[p9], Value::Num(1.0));
    // Profile 10: the order after as_of does not exist.
    let p10 = ids.iter().position(|i| *i == 10).unwrap();
    assert_eq!(col("spend_30d")[p10], Value::Num(100.0));
    assert_eq!(col("spend_tier")[p10], Value::Str(Arc::from("big")));
    assert_eq!(col("rfm_f")[p10], Value::Num(2.0));
    // Profile 11: an order exactly 30 days ago is outside `within 30d`.
    let p11 = ids.iter().position(|i| *i == 11).unwrap();
    assert_eq!(col("spend_30d")[p11], Value::Num(0.0));
    assert_eq!(col("spend_tier")[p11], Value::Null);
    assert_eq!(col("rfm_f")[p11], Value::Num(1.0));
    assert_eq!(col("lifecycle")[p11], Value::Str(Arc::from("churned")));
}

#[test]
fn quantile_buckets_follow_the_documented_cut_points() {
    // Ten profiles with 0..=3 orders (ties), quantiles 4 and 3 reversed, checked against the
    // reference and against hand-computed buckets.
    let dir = tempfile::tempdir().unwrap();
    let orders = [0u32, 1, 1, 1, 2, 2, 3, 3, 3, 3];
    let survivors: Vec<Option<u32>> = (0..orders.len() as u32).map(Some).collect();
    let mut evs = Vec::new();
    for (id, n) in orders.iter().enumerate() {
        for k in 0..*n {
            let off = evs.len() as u64 + 1;
            evs.push(ev(
                off,
                Some(id as u32),
                "track",
                Some("Order Completed"),
                "web",
                AS_OF - i64::from(k + 1) * HOUR,
                "{}",
            ));
        }
    }
    write_lake(dir.path(), &survivors, &evs);
    let plan = compiled(
        r#"
name: q4
kind: buckets
of: count(event = "Order Completed")
quantiles: 4
---
name: q3r
kind: buckets
of: count(event = "Order Completed")
quantiles: 3
reverse: true
"#,
    );
    let got = tags_sql_datafusion(dir.path(), &plan, AS_OF).unwrap();
    // Sorted: 0 1 1 1 2 2 3 3 3 3; n = 4 cuts v[2], v[5], v[7] = 1, 2, 3.
    let q4: Vec<f64> = got.columns[0]
        .values
        .iter()
        .map(|v| v.as_num().unwrap())
        .collect();
    assert_eq!(q4, vec![1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0]);
    // n = 3 cuts v[3], v[6] = 1, 3; buckets 1 2 2 2 2 2 3 3 3 3, reversed.
    let q3r: Vec<f64> = got.columns[1]
        .values
        .iter()
        .map(|v| v.as_num().unwrap())
        .collect();
    assert_eq!(q3r, vec![3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn external_tags_and_traits_are_refused_with_their_names() {
    let plan = compiled("name: credit_level\nkind: external\nvalue_type: string\nkey: member_id\n");
    match tags_sql(&plan, AS_OF, Dialect::DuckDb) {
        Err(BatchError::Unsupported(m)) => assert!(m.contains("credit_level"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let plan = compiled("name: oily\nrule: traits.skin_type = \"oily\"\n");
    match tags_sql(&plan, AS_OF, Dialect::DataFusion) {
        Err(BatchError::Unsupported(m)) => {
            assert!(
                m.contains("tag oily") && m.contains("traits.skin_type"),
                "{m}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let plan = compiled(
        "name: cal\nkind: metric\nvalue: calendar_days_since(last(event = \"Order Completed\"))\n",
    );
    match tags_sql(&plan, AS_OF, Dialect::ClickHouse) {
        Err(BatchError::Unsupported(m)) => {
            assert!(
                m.contains("tag cal") && m.contains("calendar_days_since"),
                "{m}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn tags_sql_snapshot() {
    let plan = compiled(
        r#"
name: buyer
rule: count(event = "Order Completed", within 30d) >= 1
---
name: stage
kind: stage
cases:
  - hot:  tag.buyer and days_since(last(event = "Order Completed")) <= 7
  - warm: tag.buyer
---
name: spend_q
kind: buckets
of: sum(properties.revenue, event = "Order Completed") / 2
quantiles: 3
---
name: spend_t
kind: buckets
of: sum(properties.revenue, event = "Order Completed")
thresholds: [10, 100]
reverse: true
"#,
    );
    let sql = tags_sql(&plan, AS_OF, Dialect::DataFusion).unwrap();
    expect_test::expect![[r#"
        -- portrait batch tags: 4 tags over 3 aggregate slots, as_of 1717812000000 ms
        WITH agg AS (
          -- portrait batch aggregates: 3 slots, as_of 1717812000000 ms
          SELECT
            m.survivor AS id,
            count(*) FILTER (WHERE CAST(e."timestamp" AS BIGINT) > 1715220000000 AND CAST(e."timestamp" AS BIGINT) <= 1717812000000 AND COALESCE(e.event = 'Order Completed', FALSE)) AS a0, -- slot 0: Count, within 2592000000 ms
            max(CAST(e."timestamp" AS BIGINT)) FILTER (WHERE CAST(e."timestamp" AS BIGINT) <= 1717812000000 AND COALESCE(e.event = 'Order Completed', FALSE)) AS a1, -- slot 1: LastTime, all time
            COALESCE(sum(json_num(e.properties, 'revenue')) FILTER (WHERE CAST(e."timestamp" AS BIGINT) <= 1717812000000 AND COALESCE(e.event = 'Order Completed', FALSE)), 0.0) AS a2 -- slot 2: Sum, all time
          FROM events e
          JOIN profile_map m ON e.profile_id = m.id
          WHERE m.survivor IS NOT NULL
            AND (e."date" <= '2024-06-08')
            AND CAST(e."timestamp" AS BIGINT) <= 1717812000000
          GROUP BY m.survivor
        ),
        base AS (
          SELECT
            l.id AS id,
            CAST(COALESCE(g.a0, 0) AS DOUBLE) AS v0,
            g.a1 AS v1,
            CAST(COALESCE(g.a2, 0) AS DOUBLE) AS v2
          FROM profile_map l
          LEFT JOIN agg g ON g.id = l.id
          WHERE l.survivor = l.id
        ),
        l1 AS (
          SELECT
            p.*,
            COALESCE(p.v0 >= 1.0, FALSE) AS t0, -- tag 0: buyer (rule)
            (p.v2 / NULLIF(2.0, 0)) AS o2, -- tag 2: spend_q, the bucketed value
            p.v2 AS o3 -- tag 3: spend_t, the bucketed value
          FROM base p
        ),
        l2 AS (
          SELECT
            p.*,
            CASE WHEN (COALESCE(p.t0, FALSE) AND COALESCE(floor(CAST((1717812000000 - p.v1) AS DOUBLE) / 86400000.0) <= 7.0, FALSE)) THEN 'hot' WHEN COALESCE(p.t0, FALSE) THEN 'warm' END AS t1, -- tag 1: stage (stage)
            CASE WHEN p.o2 IS NULL THEN NULL ELSE (1 + floor(CAST(count(p.o2) OVER (ORDER BY p.o2) * 3 - 1 AS DOUBLE) / NULLIF(count(p.o2) OVER (), 0))) END AS t2, -- tag 2: spend_q (buckets, 3 quantiles)
            CASE WHEN p.o3 IS NULL THEN NULL ELSE (4 - CAST((1 + CASE WHEN p.o3 >= 10.0 THEN 1 ELSE 0 END + CASE WHEN p.o3 >= 100.0 THEN 1 ELSE 0 END) AS DOUBLE)) END AS t3 -- tag 3: spend_t (buckets, 3 thresholds)
          FROM l1 p
        )
        SELECT
          p.id AS id,
          p.t0 AS "buyer",
          p.t1 AS "stage",
          p.t2 AS "spend_q",
          p.t3 AS "spend_t"
        FROM l2 p
        ORDER BY id
    "#]].assert_eq(&sql);
}
