//! Retention runs: the events past their retention period (`DIR/retention.yaml`, see
//! [`portrait_store::retention`]) lose their content in the log (through the engine, like an
//! erasure but keeping the identity links) and their rows in the Parquet lake (the erasure's
//! purge). Each run is recorded in `DIR/retention-runs.jsonl` with counts only.

use std::io::Write;
use std::path::{Path, PathBuf};

use portrait_store::retention::{Policy, PolicyError, RuleReport};
use portrait_store::{Engine, StoreError};
use serde::{Deserialize, Serialize};

/// One retention run and what it did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetentionRun {
    /// The instant periods were counted back from (RFC 3339).
    pub as_of: String,
    /// When the run started.
    pub started_at: String,
    /// When it finished.
    pub completed_at: String,
    /// `completed` or `failed`.
    pub status: String,
    /// Events whose content was removed from the log.
    pub expired: u64,
    /// Per rule: the rule and the events it expired.
    pub rules: Vec<RuleCount>,
    /// Events past their period kept because they record a consent decision.
    pub consent_kept: u64,
    /// Events past their period whose shortened record did not fit (left whole).
    pub unfit: u64,
    /// Rows removed from the lake.
    pub lake_rows: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Events expired under one rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleCount {
    /// The rule, as `{event?, source?, type?, days}`.
    pub rule: serde_json::Value,
    /// Events expired under it.
    pub expired: u64,
}

/// Errors of a retention run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The policy file is invalid (fix it with `portrait retention set` or PUT).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lake could not be cleaned; `portrait compact --rebuild` rewrites it from the log.
    #[error("lake: {0} (the log is done; `portrait compact --rebuild` rewrites the lake from it)")]
    Lake(String),
    /// The run could not be recorded.
    #[error("{path}: {reason}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
}

fn runs_path(dir: &Path) -> PathBuf {
    dir.join("retention-runs.jsonl")
}

/// Every recorded run, oldest first.
pub fn runs(dir: &Path) -> Vec<RetentionRun> {
    std::fs::read_to_string(runs_path(dir))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn record(dir: &Path, run: &RetentionRun) -> Result<(), RetentionError> {
    let path = runs_path(dir);
    let fail = |e: std::io::Error| RetentionError::Record {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    let mut line = serde_json::to_vec(run).map_err(|e| fail(std::io::Error::other(e)))?;
    line.push(b'\n');
    f.write_all(&line).map_err(fail)?;
    f.sync_data().map_err(fail)
}

fn counts(rules: &[RuleReport]) -> Vec<RuleCount> {
    rules
        .iter()
        .map(|r| RuleCount {
            rule: serde_json::to_value(&r.rule).unwrap_or_default(),
            expired: r.expired,
        })
        .collect()
}

/// Applies the data directory's retention policy at `as_of`: expires the events past their
/// period in the engine, then removes their rows from the lake. Records and returns the run.
/// Running it again at the same `as_of` expires nothing.
pub fn apply(engine: &Engine, as_of: i64) -> Result<RetentionRun, RetentionError> {
    let started = portrait_core::time::now();
    let policy = Policy::load(engine.dir())?;
    let matcher = policy.matcher(&engine.sources())?;
    let report = engine.expire(&matcher, as_of)?;
    let mut run = RetentionRun {
        as_of: portrait_core::time::format_iso(as_of),
        started_at: portrait_core::time::format_iso(started),
        completed_at: String::new(),
        status: "completed".into(),
        expired: report.expired,
        rules: counts(&report.rules),
        consent_kept: report.consent_kept,
        unfit: report.unfit,
        lake_rows: 0,
        error: None,
    };
    let lake = if report.offsets.is_empty() {
        Ok(())
    } else {
        portrait_lake::purge(engine, &report.offsets)
            .map(|r| run.lake_rows = r.rows)
            .map_err(|e| RetentionError::Lake(e.to_string()))
    };
    if let Err(e) = &lake {
        run.status = "failed".into();
        run.error = Some(e.to_string());
    }
    run.completed_at = portrait_core::time::format_iso(portrait_core::time::now());
    record(engine.dir(), &run)?;
    tracing::info!(
        expired = run.expired,
        lake_rows = run.lake_rows,
        status = %run.status,
        "retention applied"
    );
    lake.map(|()| run)
}

/// Parses an `as_of` given to the API or the CLI: an RFC 3339 instant, or a date (its end in
/// the lake's time zone, Asia/Shanghai).
pub fn parse_as_of(text: &str) -> Option<i64> {
    if let Some(ms) = portrait_core::time::parse_iso(text.trim()) {
        return Some(ms);
    }
    portrait_history::date::parse_day(text).map(portrait_history::date::end_of_day)
}

/// HTTP handlers of the retention policy (admin only; see `routes::ROUTES`).
pub mod http {
    use std::sync::Arc;

    use axum::extract::State;
    use axum::Json;
    use portrait_store::retention::Policy;
    use serde::Deserialize;
    use serde_json::{json, Value};

    use crate::error::ApiError;
    use crate::tagging::blocking;
    use crate::App;

    fn policy_json(app: &App, policy: &Policy) -> Value {
        let flagged = app.tagging.retention_flagged().unwrap_or_default();
        json!({
            "rules": policy.rules,
            "flagged_tags": flagged
                .into_iter()
                .map(|(tag, warnings)| json!({"tag": tag, "warnings": warnings}))
                .collect::<Vec<_>>(),
            "last_run": super::runs(app.engine.dir()).pop(),
        })
    }

    /// `GET /api/v1/retention`: the policy, the published tags that read further back than it
    /// keeps, and the last run.
    pub async fn get(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
        blocking(move || {
            let policy = Policy::load(app.engine.dir())?;
            Ok(Json(policy_json(&app, &policy)))
        })
        .await
    }

    /// `PUT /api/v1/retention`: replaces the policy (`{rules: [{event?, source?, type?,
    /// days}]}` as JSON or YAML). An invalid policy is a 400 naming the rule; nothing is written.
    pub async fn put(
        State(app): State<Arc<App>>,
        body: axum::body::Bytes,
    ) -> Result<Json<Value>, ApiError> {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
        blocking(move || {
            let policy = Policy::parse(&text)?;
            policy.save(app.engine.dir(), &app.engine.sources())?;
            Ok(Json(policy_json(&app, &policy)))
        })
        .await
    }

    /// Body of `POST /api/v1/retention/apply`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApplyRequest {
        /// RFC 3339 instant or date (default now).
        pub as_of: Option<String>,
    }

    /// `POST /api/v1/retention/apply`: expires what the policy says is past its period (log and
    /// lake), synchronously; answers the counts per rule.
    pub async fn apply(
        State(app): State<Arc<App>>,
        body: axum::body::Bytes,
    ) -> Result<Json<Value>, ApiError> {
        let req: ApplyRequest = if body.iter().all(u8::is_ascii_whitespace) {
            ApplyRequest::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?
        };
        let as_of = match req.as_of.as_deref() {
            None => portrait_core::time::now(),
            Some(t) => super::parse_as_of(t).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "as_of {t:?} is not an RFC 3339 instant or a date (2024-06-30)"
                ))
            })?,
        };
        blocking(move || {
            // Not beside a compaction: it counts the log's messages while this changes them.
            let run = app
                .tagging
                .with_lake_lock(|| super::apply(&app.engine, as_of))?;
            Ok(Json(json!(run)))
        })
        .await
    }
}
