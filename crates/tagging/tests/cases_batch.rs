//! The data-driven tag cases (`crates/tags/tests/cases/*.tagtest`, written for the reference
//! evaluator) run again through the batch back ends: each case's events are written as a
//! Parquet lake, the aggregates are computed by the fused kernel and by DataFusion's SQL, and
//! the tags must come out exactly as the files expect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, ListBuilder, StringBuilder, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use portrait_batch::synth::{write_events, write_profile_map, EventSpec};
use portrait_tagging::service::{evaluate_lake, BatchEngine};
use portrait_tags::casefile;
use portrait_tags::eval::RefProfile;
use portrait_tags::ir::{AggFunc, Plan};
use portrait_tags::value::Value;

fn write_profiles(lake: &Path, profiles: &[RefProfile]) {
    let mut sorted: Vec<&RefProfile> = profiles.iter().collect();
    sorted.sort_by_key(|p| p.id);
    let mut identifiers = ListBuilder::new(StringBuilder::new());
    let mut traits = StringBuilder::new();
    let mut consent = StringBuilder::new();
    for p in &sorted {
        identifiers.append(true);
        traits.append_value(serde_json::Value::Object(p.traits.clone()).to_string());
        consent.append_value("{}");
    }
    let n = sorted.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(sorted.iter().map(|p| p.id))),
        Arc::new(TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC")),
        Arc::new(UInt64Array::from(vec![0; n])),
        Arc::new(identifiers.finish()),
        Arc::new(traits.finish()),
        Arc::new(consent.finish()),
    ];
    let batch = RecordBatch::try_new(portrait_lake::profiles_schema(), cols).unwrap();
    let f = std::fs::File::create(lake.join("profiles.parquet")).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(f, portrait_lake::profiles_schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Computes the case through a batch back end; `result[p][t]` like the reference evaluator.
fn batch(plan: &Plan, profiles: &[RefProfile], as_of: i64, engine: BatchEngine) -> Vec<Vec<Value>> {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    let rows: Vec<EventSpec> = profiles
        .iter()
        .flat_map(|p| {
            p.events.iter().map(move |e| EventSpec {
                offset: e.offset,
                profile_id: Some(p.id),
                kind: e.kind.clone(),
                name: e.name.clone(),
                source: e.source.clone(),
                timestamp_ms: e.timestamp_ms,
                properties: serde_json::Value::Object(e.properties.clone()).to_string(),
            })
        })
        .collect();
    write_events(lake, &rows).unwrap();
    let max = profiles.iter().map(|p| p.id).max().unwrap_or(0);
    let survivors: Vec<Option<u32>> = (0..=max)
        .map(|i| profiles.iter().any(|p| p.id == i).then_some(i))
        .collect();
    write_profile_map(lake, &survivors).unwrap();
    write_profiles(lake, profiles);
    let externals = |t: usize, id: u32| {
        let name = &plan.tags[t].name;
        profiles
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.externals.get(name).cloned())
            .unwrap_or(Value::Null)
    };
    let computed =
        evaluate_lake(lake, plan, as_of, engine, &externals, &mut |_| {}).expect("batch run");
    profiles
        .iter()
        .map(|p| {
            let pos = computed.ids.iter().position(|i| *i == p.id);
            computed
                .columns
                .iter()
                .map(|c| {
                    pos.and_then(|i| c.values.get(i).cloned())
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .collect()
}

fn run_all(engine: BatchEngine, skip: &dyn Fn(&Plan) -> bool) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tags/tests/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tagtest"))
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    let ran = std::cell::Cell::new(0usize);
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let name = format!("cases/{}", path.file_name().unwrap().to_string_lossy());
        let engine_fn = |plan: &Plan, profiles: &[RefProfile], as_of: i64| {
            if skip(plan) {
                // No SQL form for this plan: the reference answers, so the file still runs.
                return portrait_tags::eval::reference(plan, profiles, as_of);
            }
            ran.set(ran.get() + 1);
            batch(plan, profiles, as_of, engine)
        };
        let outcome =
            casefile::run(&text, &name, &engine_fn, false).unwrap_or_else(|e| panic!("{e}"));
        failures.extend(outcome.failures);
    }
    assert!(failures.is_empty(), "{engine:?}:\n{}", failures.join("\n"));
    ran.get()
}

#[test]
fn case_files_through_the_fused_kernel() {
    let ran = run_all(BatchEngine::Kernel, &|_| false);
    assert!(ran >= 10, "only {ran} cases ran");
}

#[test]
fn case_files_through_datafusion() {
    // DataFusion has no most_frequent aggregate: those plans are not sent to it.
    let no_sql = |p: &Plan| p.aggregates.iter().any(|a| a.func == AggFunc::MostFrequent);
    let ran = run_all(BatchEngine::DataFusion, &no_sql);
    assert!(ran >= 10, "only {ran} cases ran");
}
