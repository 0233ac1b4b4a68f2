//! Every data-driven case of the tag language (`crates/tags/tests/cases/*.tagtest`: window
//! edges to the millisecond, Asia/Shanghai day boundaries, calendar windows, `days_since` steps,
//! nulls, buckets, dependencies) run through the real-time engine twice:
//!
//! - **timer path**: each event arrives at its own event time and the engine's clock then moves
//!   to `as_of` with no event, so every window exit, future event and day step happens by timer;
//! - **late path**: every event arrives at `as_of`, in file order (out of order by time).
//!
//! Tags the engine cannot maintain (externals, quantile buckets, tags reading them) are left to
//! the reference evaluator; every other value must equal the expectation of the case.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use portrait_realtime::{Config, Event, Realtime};
use portrait_tags::casefile;
use portrait_tags::eval::{reference, RefProfile};
use portrait_tags::ir::Plan;
use portrait_tags::value::Value;

#[derive(Clone, Copy)]
enum Path_ {
    Timer,
    Late,
}

/// The tags of `plan` the engine maintains: the fixed point of the incremental check.
fn incremental(plan: &Plan) -> BTreeSet<String> {
    let mut ok: BTreeSet<String> = plan.tags.iter().map(|t| t.name.clone()).collect();
    loop {
        let before = ok.len();
        let keep: BTreeSet<String> = plan
            .tags
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                portrait_tags::incremental::check(plan, *i, &|n| ok.contains(n)).is_ok()
            })
            .map(|(_, t)| t.name.clone())
            .collect();
        ok = ok.intersection(&keep).cloned().collect();
        if ok.len() == before {
            return ok;
        }
    }
}

fn realtime(plan: &Plan, profiles: &[RefProfile], as_of: i64, path: Path_) -> Vec<Vec<Value>> {
    let expected = reference(plan, profiles, as_of);
    let ok = incremental(plan);
    let mut events: Vec<(u32, &portrait_tags::eval::RefEvent)> = profiles
        .iter()
        .flat_map(|p| p.events.iter().map(move |e| (p.id, e)))
        .collect();
    let start = events
        .iter()
        .map(|(_, e)| e.timestamp_ms)
        .min()
        .unwrap_or(as_of)
        .min(as_of);
    let mut rt = Realtime::new(
        plan.clone(),
        Vec::new(),
        Config {
            lateness_ms: i64::MAX / 4,
        },
        start,
    );
    let traits = |id: u32| {
        profiles
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.traits.clone())
    };
    for p in profiles {
        rt.rebuild(p.id, std::iter::empty(), start, &traits);
    }
    match path {
        Path_::Timer => events.sort_by_key(|(_, e)| (e.timestamp_ms, e.offset)),
        Path_::Late => events.sort_by_key(|(_, e)| e.offset),
    }
    for (id, e) in events {
        let props = serde_json::Value::Object(e.properties.clone()).to_string();
        let now = match path {
            Path_::Timer => e.timestamp_ms.clamp(start, as_of),
            Path_::Late => as_of,
        };
        rt.advance(now, &traits);
        rt.apply(
            id,
            &[],
            &Event {
                offset: e.offset,
                ts: e.timestamp_ms,
                kind: &e.kind,
                name: e.name.as_deref(),
                source: &e.source,
                properties: &props,
                message_id: "case",
                touches_traits: false,
            },
            now,
            &traits,
        );
    }
    rt.advance(as_of, &traits);
    profiles
        .iter()
        .zip(expected)
        .map(|(p, row)| {
            let got = rt.values(p.id);
            row.into_iter()
                .zip(plan.tags.iter())
                .zip(got)
                .map(|((want, t), (_, have))| if ok.contains(&t.name) { have } else { want })
                .collect()
        })
        .collect()
}

fn case_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = [root.join("../tags/tests/cases"), root.join("tests/cases")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tagtest"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "case files not found");
    files
}

fn run(path: Path_) {
    let files = case_files();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = format!("cases/{}", f.file_name().unwrap().to_string_lossy());
        let outcome = casefile::run(
            &text,
            &name,
            &|plan, profiles, as_of| realtime(plan, profiles, as_of, path),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        failures.extend(outcome.failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn case_files_through_the_timer_path() {
    run(Path_::Timer);
}

#[test]
fn case_files_through_the_late_path() {
    run(Path_::Late);
}

/// The engine's own cases hold for the reference evaluator too (so the expectations are right).
#[test]
fn timer_cases_hold_for_the_reference_evaluator() {
    for f in case_files()
        .iter()
        .filter(|f| f.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")))
    {
        let text = std::fs::read_to_string(f).unwrap();
        let outcome = casefile::run(
            &text,
            "timers",
            &|plan, profiles, as_of| reference(plan, profiles, as_of),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            outcome.failures.is_empty(),
            "{}",
            outcome.failures.join("\n")
        );
    }
}
