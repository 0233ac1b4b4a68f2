//! Backfill: compute past dates' values from the lake (`as_of` = the end of each date) and
//! snapshot them, so a new tag has history from day one.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use portrait_tagging::service::{evaluate_lake, to_tag_data, BatchEngine, Tagging};
use portrait_tags::ir::{Plan, TagBody};
use portrait_tags::value::Value;
use portrait_tagstore::{StoredValue, TagData};
use serde::Serialize;

use crate::date::{end_of_day, format_day, Day};
use crate::error::HistoryError;
use crate::store::History;

/// Progress of a backfill: called after each date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    /// The date just snapshotted.
    pub date: String,
    /// Dates done.
    pub done: usize,
    /// Dates in all.
    pub total: usize,
    /// Events scanned for this date.
    pub events_scanned: u64,
    /// Wall time so far (ms).
    pub elapsed_ms: u64,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Dates snapshotted.
    pub dates: Vec<String>,
    /// Tags snapshotted (the requested ones and the tags they read).
    pub tags: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Dates removed by retention while backfilling.
    pub pruned: Vec<String>,
    /// Wall time (ms).
    pub duration_ms: u64,
}

fn stored_to_value(v: StoredValue) -> Value {
    match v {
        StoredValue::Bool(b) => Value::Bool(b),
        StoredValue::Label(s) => Value::Str(Arc::from(s.as_str())),
        StoredValue::Num(n) => Value::Num(n),
    }
}

impl History {
    /// Backfills the published tags (or `tags` and what they read) of `tagging` at each of
    /// `dates`, over its lake as it is (compact first to include the newest events). External
    /// tags have no past: they are not snapshotted, and tags reading them see today's values.
    pub fn backfill(
        &self,
        tagging: &Tagging,
        dates: &[Day],
        tags: Option<&[String]>,
        progress: &mut dyn FnMut(&BackfillProgress),
    ) -> Result<BackfillReport, HistoryError> {
        let (plan, _) = tagging
            .plan(tags)
            .map_err(|e| HistoryError::Compute(e.to_string()))?;
        let lake = portrait_lake::lake_dir(tagging.engine().dir());
        let snap = tagging.snapshot();
        let externals = |t: usize, id: u32| {
            plan.tags
                .get(t)
                .and_then(|tag| snap.value_of(&tag.name, id))
                .map_or(Value::Null, stored_to_value)
        };
        self.backfill_lake(&lake, &plan, dates, &externals, progress)
    }

    /// Backfills every non-external tag of `plan` over the lake at `lake` at each of `dates`.
    pub fn backfill_lake(
        &self,
        lake: &Path,
        plan: &Plan,
        dates: &[Day],
        externals: &(dyn Fn(usize, u32) -> Value + Sync),
        progress: &mut dyn FnMut(&BackfillProgress),
    ) -> Result<BackfillReport, HistoryError> {
        let started = Instant::now();
        let mut dates = dates.to_vec();
        dates.sort();
        dates.dedup();
        let mut report = BackfillReport {
            tags: plan
                .tags
                .iter()
                .filter(|t| !matches!(t.body, TagBody::External))
                .map(|t| t.name.clone())
                .collect(),
            ..BackfillReport::default()
        };
        for (i, d) in dates.iter().enumerate() {
            let computed = evaluate_lake(
                lake,
                plan,
                end_of_day(*d),
                BatchEngine::Kernel,
                externals,
                &mut |_| {},
            )
            .map_err(|e| HistoryError::Compute(e.to_string()))?;
            let mut values: Vec<(String, TagData)> = Vec::new();
            for (col, tag) in computed.columns.iter().zip(&plan.tags) {
                if matches!(tag.body, TagBody::External) {
                    continue;
                }
                let data = to_tag_data(tag.value_type, &tag.body, &computed.ids, &col.values)
                    .map_err(|e| HistoryError::Compute(e.to_string()))?;
                values.push((tag.name.clone(), data));
            }
            let refs: Vec<(String, &TagData)> =
                values.iter().map(|(n, d)| (n.clone(), d)).collect();
            let r = self.record_tags(&computed.universe, &refs, *d)?;
            report.bytes += r.bytes;
            report.pruned.extend(r.pruned);
            report.dates.push(format_day(*d));
            progress(&BackfillProgress {
                date: format_day(*d),
                done: i + 1,
                total: dates.len(),
                events_scanned: computed.events_scanned,
                elapsed_ms: started.elapsed().as_millis() as u64,
            });
        }
        report.pruned.sort();
        report.pruned.dedup();
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}
