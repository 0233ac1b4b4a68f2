//! Differential test: for random event streams — late, out of order, future-dated, duplicate
//! message ids, trait updates and merges — the real-time values at any instant equal the
//! reference (batch) evaluation `as_of` that instant.

use std::collections::{BTreeMap, BTreeSet};

use portrait_realtime::{Audience, Config, Event, Realtime};
use portrait_tags::eval::{eval_scalar, json_path, reference, RefEvent, RefProfile, Row};
use portrait_tags::ir::{Plan, ProfileField};
use portrait_tags::value::Value;
use portrait_tags::{compile, compile_audience, parse_defs, Known};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

const DEFS: &str = r#"
name: views_7d
kind: metric
refresh: realtime
value: count(event = "Product Viewed", within 7d)
---
name: high_intent
refresh: realtime
rule: >
  count(event = "Product Viewed", within 7d) >= 3
  and (count(event = "Product Added", within 2d) >= 1 or tag.spend_all > 100)
---
name: spend_all
kind: metric
refresh: realtime
value: sum(properties.revenue, event = "Order Completed")
---
name: avg_basket_30d
kind: metric
refresh: realtime
value: avg(properties.revenue, event = "Order Completed", within 30d)
---
name: max_order_ago
kind: metric
refresh: realtime
value: max(properties.revenue, event = "Order Completed", between 10d and 3d ago)
---
name: min_order
kind: metric
refresh: realtime
value: min(properties.revenue, event = "Order Completed")
---
name: categories
kind: metric
refresh: realtime
value: count_distinct(properties.category, within 5d)
---
name: favourite
kind: metric
refresh: realtime
value: most_frequent(properties.category)
---
name: favourite_4d
kind: metric
refresh: realtime
value: most_frequent(properties.category, within 4d)
---
name: first_cat
kind: metric
refresh: realtime
value: first(properties.category, event = "Product Viewed")
---
name: last_cat_3d
kind: metric
refresh: realtime
value: last(properties.category, within 3d)
---
name: today_views
kind: metric
refresh: realtime
value: count(event = "Product Viewed", within 2 calendar days)
---
name: lifecycle
kind: stage
refresh: realtime
cases:
  - churned:  days_since(last(event = "Order Completed")) > 20
  - dormant:  days_since(last(event = "Order Completed")) > 5
  - active:   count(event = "Order Completed", within 5d) >= 1 and count(event = "Order Completed") >= 2
  - new:      count(event = "Order Completed") >= 1
  - prospect: true
---
name: recency
kind: buckets
refresh: realtime
of: hours_since(last(event = "Order Completed"))
thresholds: [24, 72, 240]
reverse: true
---
name: tenure_days
kind: metric
refresh: realtime
value: calendar_days_since(first_seen)
---
name: gold
refresh: realtime
rule: traits.member_level = "gold" and count(event = "Order Completed") >= 1
"#;

const AUDIENCE: &str = r#"high_intent or (gold and lifecycle in ("active", "new"))"#;

fn plan() -> (Plan, Vec<Audience>) {
    let defs = parse_defs(DEFS, "rt.yaml").expect("definitions parse");
    let plan = compile(&defs, &Known::default())
        .expect("definitions compile")
        .plan;
    for i in 0..plan.tags.len() {
        portrait_tags::incremental::check(&plan, i, &|_| true).expect("incremental");
    }
    let tags: Vec<(String, portrait_tags::value::Type)> = plan
        .tags
        .iter()
        .map(|t| (t.name.clone(), t.value_type))
        .collect();
    let expr = compile_audience(AUDIENCE, &tags, plan.time_zone).expect("audience compiles");
    (
        plan,
        vec![Audience {
            name: "vip_push".into(),
            expr,
        }],
    )
}

#[derive(Debug, Clone)]
enum Op {
    /// An event of profile `p` arriving `gap` ms after the previous operation, dated `skew` ms
    /// from its arrival (negative: late).
    Event {
        p: u32,
        name: u8,
        cat: u8,
        revenue: u16,
        gap: i64,
        skew: i64,
        dup: bool,
    },
    /// An identify setting the member level.
    Level { p: u32, gold: bool, gap: i64 },
    /// Profile `from` merges into `into`.
    Merge { from: u32, into: u32, gap: i64 },
    /// Check every profile at `gap` ms after the previous operation.
    Check { gap: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..4, 0u8..4, 0u8..4, 0u16..300, 0i64..(2 * DAY), -(12 * DAY)..(DAY / 2), prop::bool::weighted(0.1))
            .prop_map(|(p, name, cat, revenue, gap, skew, dup)| Op::Event { p, name, cat, revenue, gap, skew, dup }),
        1 => (0u32..4, any::<bool>(), 0i64..DAY).prop_map(|(p, gold, gap)| Op::Level { p, gold, gap }),
        1 => (0u32..4, 0u32..4, 0i64..DAY).prop_map(|(from, into, gap)| Op::Merge { from, into, gap }),
        2 => (0i64..(6 * DAY)).prop_map(|gap| Op::Check { gap }),
    ]
}

const NAMES: [&str; 4] = [
    "Product Viewed",
    "Product Added",
    "Order Completed",
    "App Opened",
];
const CATS: [&str; 4] = ["美妆", "护肤", "母婴", "服饰"];

struct World {
    /// The live profile each original profile resolves to.
    redirect: BTreeMap<u32, u32>,
    profiles: BTreeMap<u32, RefProfile>,
    seen_ids: BTreeSet<String>,
    offset: u64,
}

impl World {
    /// A profile's traits as the store would give them.
    fn traits(&self, id: u32) -> Option<serde_json::Map<String, serde_json::Value>> {
        Some(
            self.profiles
                .get(&id)
                .map(|p| p.traits.clone())
                .unwrap_or_default(),
        )
    }

    fn resolve(&self, p: u32) -> u32 {
        let mut p = p;
        while let Some(n) = self.redirect.get(&p) {
            p = *n;
        }
        p
    }
}

struct AudRow<'a> {
    tags: &'a [Value],
    traits: &'a serde_json::Map<String, serde_json::Value>,
}

impl Row for AudRow<'_> {
    fn agg(&self, _: usize) -> Value {
        Value::Null
    }
    fn tag(&self, i: usize) -> Value {
        self.tags.get(i).cloned().unwrap_or(Value::Null)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        json_path(self.traits, path)
    }
    fn profile(&self, _: ProfileField) -> Value {
        Value::Null
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        _ => a == b,
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let (plan, audiences) = plan();
    let mut rt = Realtime::new(
        plan.clone(),
        audiences.clone(),
        Config {
            lateness_ms: 1000 * DAY,
        },
        T0,
    );
    let mut w = World {
        redirect: BTreeMap::new(),
        profiles: (0..4)
            .map(|p| {
                (
                    p,
                    RefProfile {
                        id: p,
                        ..RefProfile::default()
                    },
                )
            })
            .collect(),
        seen_ids: BTreeSet::new(),
        offset: 0,
    };
    let mut now = T0;
    let mut msg_no = 0u64;
    for op in ops {
        match op {
            Op::Event {
                p,
                name,
                cat,
                revenue,
                gap,
                skew,
                dup,
            } => {
                now += gap;
                msg_no += 1;
                // A duplicate re-sends the previous message id: the store drops it.
                let id = if *dup && msg_no > 1 {
                    format!("m{}", msg_no - 1)
                } else {
                    format!("m{msg_no}")
                };
                if !w.seen_ids.insert(id.clone()) {
                    continue;
                }
                let target = w.resolve(*p);
                w.offset += 1;
                let mut props = serde_json::Map::new();
                props.insert("category".into(), CATS[*cat as usize].into());
                props.insert("revenue".into(), (*revenue as f64 / 2.0).into());
                let text = serde_json::Value::Object(props.clone()).to_string();
                let ev = RefEvent {
                    offset: w.offset,
                    name: Some(NAMES[*name as usize].to_string()),
                    kind: "track".into(),
                    source: "app".into(),
                    timestamp_ms: now + skew,
                    properties: props,
                };
                let traits = |id: u32| w.traits(id);
                rt.apply(
                    target,
                    &[],
                    &Event {
                        offset: ev.offset,
                        ts: ev.timestamp_ms,
                        kind: "track",
                        name: ev.name.as_deref(),
                        source: "app",
                        properties: &text,
                        message_id: &id,
                        touches_traits: false,
                    },
                    now,
                    &traits,
                );
                if let Some(prof) = w.profiles.get_mut(&target) {
                    prof.events.push(ev);
                }
            }
            Op::Level { p, gold, gap } => {
                now += gap;
                let target = w.resolve(*p);
                w.offset += 1;
                let level = if *gold { "gold" } else { "silver" };
                if let Some(prof) = w.profiles.get_mut(&target) {
                    prof.traits.insert("member_level".into(), level.into());
                    // An identify is an event too (first_seen / last_seen read it).
                    prof.events.push(RefEvent {
                        offset: w.offset,
                        name: None,
                        kind: "identify".into(),
                        source: "crm".into(),
                        timestamp_ms: now,
                        properties: serde_json::Map::new(),
                    });
                }
                let traits = |id: u32| w.traits(id);
                rt.apply(
                    target,
                    &[],
                    &Event {
                        offset: w.offset,
                        ts: now,
                        kind: "identify",
                        name: None,
                        source: "crm",
                        properties: "{}",
                        message_id: "identify",
                        touches_traits: true,
                    },
                    now,
                    &traits,
                );
            }
            Op::Merge { from, into, gap } => {
                now += gap;
                let (from, into) = (w.resolve(*from), w.resolve(*into));
                if from == into {
                    continue;
                }
                let gone = w.profiles.remove(&from).unwrap_or_default();
                w.redirect.insert(from, into);
                if let Some(prof) = w.profiles.get_mut(&into) {
                    prof.events.extend(gone.events);
                    for (k, v) in gone.traits {
                        prof.traits.entry(k).or_insert(v);
                    }
                }
                let traits = |id: u32| w.traits(id);
                rt.advance(now, &traits);
                rt.merge(into, from, &traits);
            }
            Op::Check { gap } => {
                now += gap;
                let traits = |id: u32| w.traits(id);
                rt.advance(now, &traits);
                let live: Vec<RefProfile> = w.profiles.values().cloned().collect();
                let want = reference(&plan, &live, now);
                for (p, row) in live.iter().zip(&want) {
                    let got = rt.values(p.id);
                    for ((name, g), e) in got.iter().zip(row) {
                        prop_assert!(
                            close(g, e),
                            "profile {} tag {} at +{} ms: realtime {:?}, batch {:?}\nall realtime {:?}\nall batch {:?}\nevents {:?}",
                            p.id,
                            name,
                            now - T0,
                            g,
                            e,
                            got,
                            row,
                            p.events.iter().map(|e| (e.offset, e.timestamp_ms - T0, e.kind.clone())).collect::<Vec<_>>()
                        );
                    }
                    let member = eval_scalar(
                        &audiences[0].expr,
                        &AudRow {
                            tags: row,
                            traits: &p.traits,
                        },
                        now,
                        plan.time_zone,
                    )
                    .truthy();
                    let got_member = rt.memberships(p.id).contains(&"vip_push");
                    prop_assert_eq!(got_member, member, "audience of profile {}", p.id);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]
    #[test]
    fn realtime_equals_batch(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}

#[test]
fn changes_name_the_cause_and_the_timer_turns_a_rule_off() {
    let (plan, audiences) = plan();
    let mut rt = Realtime::new(plan, audiences, Config::default(), T0);
    let none = |_: u32| None;
    for i in 0..3u64 {
        let id = format!("v{i}");
        rt.apply(
            1,
            &[],
            &Event {
                offset: i,
                ts: T0 + i as i64,
                kind: "track",
                name: Some("Product Viewed"),
                source: "app",
                properties: r#"{"category":"美妆"}"#,
                message_id: &id,
                touches_traits: false,
            },
            T0 + 10,
            &none,
        );
    }
    let changes = rt.take_changes();
    let hi: Vec<_> = changes
        .iter()
        .filter(|c| c.name.as_ref() == "high_intent")
        .collect();
    assert!(hi.is_empty(), "no cart yet: {hi:?}");
    rt.apply(
        1,
        &[],
        &Event {
            offset: 9,
            ts: T0 + 100,
            kind: "track",
            name: Some("Product Added"),
            source: "app",
            properties: "{}",
            message_id: "cart",
            touches_traits: false,
        },
        T0 + 100,
        &none,
    );
    let changes = rt.take_changes();
    let on = changes
        .iter()
        .find(|c| c.name.as_ref() == "high_intent")
        .expect("high_intent turned on");
    assert_eq!(on.new, Value::Bool(true));
    assert!(
        matches!(&on.cause, portrait_realtime::Cause::Event { message_id, .. } if message_id.as_ref() == "cart")
    );
    assert!(changes
        .iter()
        .any(|c| c.name.as_ref() == "vip_push" && c.new == Value::Bool(true)));
    // The next instant anything can change is the next local midnight in Asia/Shanghai
    // (tenure_days counts calendar days): 2026-01-02T00:00+08:00 = T0 + 16 h.
    assert_eq!(rt.next_due(), Some(T0 + 16 * 3_600_000));
    // The cart leaves its 2-day window at T0 + 100 ms + 2 d, not a millisecond before.
    rt.advance(T0 + 2 * DAY + 99, &none);
    assert!(!rt
        .take_changes()
        .iter()
        .any(|c| c.name.as_ref() == "high_intent"));
    rt.advance(T0 + 2 * DAY + 100, &none);
    let off = rt.take_changes();
    assert!(
        off.iter().any(|c| c.name.as_ref() == "high_intent"
            && c.new == Value::Bool(false)
            && c.cause == portrait_realtime::Cause::Timer),
        "{off:?}"
    );
}

/// A profile's midnight timer fell due between two of its events: the second event must
/// re-evaluate the calendar tag too (found by the property test).
#[test]
fn a_timer_due_before_an_event_is_not_lost() {
    let ops = vec![
        Op::Level {
            p: 0,
            gold: false,
            gap: 39090791,
        },
        Op::Event {
            p: 0,
            name: 0,
            cat: 0,
            revenue: 0,
            gap: 113916179,
            skew: 0,
            dup: false,
        },
        Op::Check { gap: 412404682 },
        Op::Event {
            p: 0,
            name: 0,
            cat: 0,
            revenue: 0,
            gap: 42379972,
            skew: 0,
            dup: false,
        },
        Op::Level {
            p: 3,
            gold: false,
            gap: 44670930,
        },
        Op::Event {
            p: 0,
            name: 0,
            cat: 0,
            revenue: 0,
            gap: 29668922,
            skew: 0,
            dup: false,
        },
        Op::Event {
            p: 0,
            name: 0,
            cat: 0,
            revenue: 0,
            gap: 75675496,
            skew: -517421192,
            dup: false,
        },
        Op::Check { gap: 41777629 },
    ];
    run(&ops).expect("realtime equals batch");
}

/// Beyond the lateness bound an event is counted, not applied, and the profile is handed back
/// for a rebuild from its events, which gives the exact value.
#[test]
fn events_beyond_the_lateness_bound_wait_for_a_rebuild() {
    let (plan, audiences) = plan();
    let mut rt = Realtime::new(plan, audiences, Config { lateness_ms: DAY }, T0);
    let none = |_: u32| None;
    let now = T0 + 10 * DAY;
    let old = Event {
        offset: 1,
        ts: now - 2 * DAY,
        kind: "track",
        name: Some("Product Viewed"),
        source: "app",
        properties: "{}",
        message_id: "late",
        touches_traits: false,
    };
    rt.apply(7, &[], &old, now, &none);
    assert_eq!(rt.counters().late, 1);
    let views = |rt: &Realtime| {
        rt.values(7)
            .into_iter()
            .find(|(n, _)| *n == "views_7d")
            .map(|(_, v)| v)
    };
    assert_eq!(views(&rt), Some(Value::Num(0.0)));
    assert_eq!(rt.take_stale(), vec![7]);
    rt.rebuild(7, [old], now, &none);
    assert_eq!(views(&rt), Some(Value::Num(1.0)));
    assert!(rt
        .take_changes()
        .iter()
        .any(|c| c.name.as_ref() == "views_7d" && c.cause == portrait_realtime::Cause::Rebuild));
}

/// A tag reading traits and events, re-evaluated because of an event that does not touch
/// traits, still sees the profile's traits (no timer due to mask it).
#[test]
fn a_rule_on_traits_and_events_reads_traits_when_an_event_changes_it() {
    let defs = parse_defs(
        "name: gold\nrefresh: realtime\nrule: traits.member_level = \"gold\" and count(event = \"Order Completed\") >= 1\n",
        "gold.yaml",
    )
    .expect("parses");
    let plan = compile(&defs, &Known::default()).expect("compiles").plan;
    let mut rt = Realtime::new(plan, Vec::new(), Config::default(), T0);
    let gold = |_: u32| {
        let mut m = serde_json::Map::new();
        m.insert("member_level".into(), "gold".into());
        Some(m)
    };
    let order = Event {
        offset: 1,
        ts: T0,
        kind: "track",
        name: Some("Order Completed"),
        source: "shop",
        properties: "{}",
        message_id: "o1",
        touches_traits: false,
    };
    rt.apply(3, &[], &order, T0, &gold);
    assert_eq!(rt.values(3), vec![("gold", Value::Bool(true))]);
}
