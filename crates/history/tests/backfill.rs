//! Backfill equals the snapshots taken live: a real data directory (engine, lake, tag
//! service), tags computed at the end of several dates and recorded, then the same dates
//! backfilled into a second history from the lake. Known stage transitions are asserted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{IdentityConfig, Message};
use portrait_history::{end_of_day, parse_day, Day, History, PathCount, Transition};
use portrait_store::{Engine, EngineOptions, SourceKind};
use portrait_tagging::service::{ComputeOptions, Tagging};
use serde_json::{json, Value};

const DEFS: &str = r#"
name: orders
kind: metric
value: count(event = "Order Completed")
---
name: stage
kind: stage
cases:
  - churned:  days_since(last(event = "Order Completed")) > 40
  - dormant:  days_since(last(event = "Order Completed")) > 14
  - active:   count(event = "Order Completed", within 14d) >= 1
  - prospect: true
---
name: complained
rule: count(event = "Complaint Filed", within 30d) >= 1
"#;

fn msg(v: Value, n: &mut u64) -> Message {
    *n += 1;
    let mut v = v;
    v["messageId"] = json!(format!("m{n}"));
    let env = Envelope {
        source: 1,
        received_at: 1_720_000_000_000,
        ..Default::default()
    };
    parse_message(&v, &env, &IdentityConfig::default())
        .unwrap()
        .message
}

fn d(s: &str) -> Day {
    parse_day(s).unwrap()
}

fn setup(dir: &std::path::Path) -> Tagging {
    let engine = Engine::open(dir, EngineOptions::default()).unwrap();
    engine
        .sources_mut()
        .add("crm", SourceKind::Crm, Some("crm-key-123"))
        .unwrap();
    let mut n = 0;
    let mut msgs = Vec::new();
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        msgs.push(msg(
            json!({"type": "identify", "userId": u, "traits": {"name": u},
                   "timestamp": "2024-01-01T09:00:00+08:00"}),
            &mut n,
        ));
    }
    let orders = [
        ("u1", "2024-01-10"),
        ("u1", "2024-02-15"),
        ("u1", "2024-03-10"),
        ("u2", "2024-01-12"),
        ("u3", "2024-02-10"),
        ("u3", "2024-02-18"),
        ("u5", "2024-01-14"),
        ("u5", "2024-03-14"),
    ];
    for (u, day) in orders {
        msgs.push(msg(
            json!({"type": "track", "userId": u, "event": "Order Completed",
                   "properties": {"revenue": 100}, "timestamp": format!("{day}T10:00:00+08:00")}),
            &mut n,
        ));
    }
    msgs.push(msg(
        json!({"type": "track", "userId": "u5", "event": "Complaint Filed",
               "properties": {"reason": "late"}, "timestamp": "2024-03-01T10:00:00+08:00"}),
        &mut n,
    ));
    engine.ingest(msgs).unwrap();
    let t = Tagging::open(Arc::new(engine)).unwrap();
    t.apply(DEFS, "defs.yaml", "test", true).unwrap();
    t
}

fn tr(from: &str, to: &str, count: u64) -> Transition {
    Transition {
        from: from.into(),
        to: to.into(),
        count,
    }
}

#[test]
fn backfill_equals_live_snapshots() {
    let data = tempfile::tempdir().unwrap();
    let t = setup(data.path());
    let dates = [
        d("2024-01-15"),
        d("2024-02-01"),
        d("2024-02-20"),
        d("2024-03-15"),
    ];
    let live_dir = tempfile::tempdir().unwrap();
    let live = History::open(live_dir.path()).unwrap();
    for day in dates {
        let opts = ComputeOptions {
            as_of: Some(end_of_day(day)),
            ..ComputeOptions::default()
        };
        t.compute(&opts, &mut |_| {}).unwrap();
        live.record(&t.snapshot(), day).unwrap();
    }
    let back_dir = tempfile::tempdir().unwrap();
    let back = History::open(back_dir.path()).unwrap();
    let mut seen = Vec::new();
    let report = back
        .backfill(&t, &dates, None, &mut |p| seen.push((p.done, p.total)))
        .unwrap();
    assert_eq!(seen, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert_eq!(report.dates.len(), 4);
    assert_eq!(
        back.tags().unwrap(),
        vec!["complained".to_string(), "orders".into(), "stage".into()]
    );
    assert_eq!(live.tags().unwrap(), back.tags().unwrap());
    for tag in back.tags().unwrap() {
        assert_eq!(live.dates(&tag).unwrap(), dates.to_vec());
        for day in dates {
            let a = live.load(&tag, day).unwrap();
            let b = back.load(&tag, day).unwrap();
            assert_eq!(a, b, "{tag} at {day}");
        }
    }
    assert_eq!(back.universe(d("2024-01-15")).unwrap().len(), 5);

    // Known movements (see the orders above).
    assert_eq!(
        back.transitions("stage", d("2024-01-15"), d("2024-02-20"), None)
            .unwrap(),
        vec![
            tr("active", "active", 1),
            tr("active", "dormant", 2),
            tr("prospect", "active", 1),
            tr("prospect", "prospect", 1),
        ]
    );
    assert_eq!(
        back.transitions("stage", d("2024-02-20"), d("2024-03-15"), None)
            .unwrap(),
        vec![
            tr("active", "active", 1),
            tr("active", "dormant", 1),
            tr("dormant", "active", 1),
            tr("dormant", "churned", 1),
            tr("prospect", "prospect", 1),
        ]
    );
    let path = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let paths = back
        .paths(
            "stage",
            &[d("2024-01-15"), d("2024-02-20"), d("2024-03-15")],
            None,
            true,
            10,
        )
        .unwrap();
    assert!(
        paths.contains(&PathCount {
            path: path(&["active", "dormant", "active"]),
            count: 1
        }),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 5);
    let c = back
        .change("complained", None, d("2024-02-20"), d("2024-03-15"), None)
        .unwrap();
    assert_eq!((c.entered, c.exited, c.stayed), (1, 0, 0));
    let pop = back
        .population("orders", d("2024-01-01"), d("2024-12-31"), None)
        .unwrap();
    assert_eq!(pop.len(), 4);
    assert_eq!(pop[0].values.get("(value)"), Some(&5));
}

#[test]
fn lifecycle_template_parses_and_compiles() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tags/lifecycle.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let defs = portrait_tags::parse_defs(&text, "lifecycle.yaml").unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter().map(|x| x.render()).collect::<Vec<_>>().join("\n")
        )
    });
    assert!(defs.len() >= 10, "{}", defs.len());
    let compiled =
        portrait_tags::compile(&defs, &portrait_tags::Known::default()).unwrap_or_else(|d| {
            panic!(
                "{}",
                d.iter().map(|x| x.render()).collect::<Vec<_>>().join("\n")
            )
        });
    for name in [
        "lc_stage",
        "lc_rfm_r",
        "lc_rfm_f",
        "lc_rfm_m",
        "lc_rfm_group",
        "lc_dormant_vip_reactivation",
    ] {
        assert!(compiled.plan.tag_index(name).is_some(), "{name}");
    }
    // `portrait tags apply` accepts it on a data directory.
    let data = tempfile::tempdir().unwrap();
    let t = setup(data.path());
    let report = t
        .apply(&text, "lifecycle.yaml", "test", true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.tags.len(), defs.len());
    let opts = ComputeOptions {
        as_of: Some(end_of_day(d("2024-03-15"))),
        ..ComputeOptions::default()
    };
    t.compute(&opts, &mut |_| {}).unwrap();
    assert!(t.snapshot().tag("lc_stage").is_some());
}
