//! Erasure requests: the person is removed from every store Portrait keeps.
//!
//! One request runs synchronously through: the engine (events rewritten in place as keyed
//! skeletons, profile and identity links removed, identifiers suppressed, snapshot replaced),
//! the Parquet lake (part files and profile tables rewritten), and the import reject files
//! under the data directory (lines naming the person removed). The request is recorded in
//! `DIR/erasures.jsonl` with counts and times only — never the identifiers.

use std::io::Write;
use std::path::{Path, PathBuf};

use portrait_core::{Identifier, ProfileId};
use portrait_store::{Engine, StoreError};
use serde::{Deserialize, Serialize};

/// One erasure request and what it did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErasureRecord {
    /// Request id.
    pub id: String,
    /// The profile erased.
    pub profile: ProfileId,
    /// `completed` or `failed`.
    pub status: String,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// When it finished.
    pub completed_at: Option<String>,
    /// Events destroyed in the log.
    pub events: usize,
    /// Identifiers added to the suppression list.
    pub identifiers: usize,
    /// Rows removed from the lake.
    pub lake_rows: u64,
    /// Lines removed from reject files.
    pub reject_lines: u64,
    /// Why it failed, when it did (no personal data).
    pub error: Option<String>,
}

/// Errors of an erasure.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The engine refused (e.g. no such profile).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A derived store could not be cleaned.
    #[error("{0}")]
    Derived(String),
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("erasures.jsonl")
}

fn append(dir: &Path, record: &ErasureRecord) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))?;
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// All erasure requests, oldest first.
pub fn list(dir: &Path) -> Vec<ErasureRecord> {
    std::fs::read_to_string(log_path(dir))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a line of a reject file names one of `ids`.
fn names(line: &str, ids: &[Identifier]) -> bool {
    let lower = line.to_lowercase();
    let digits: String = line.chars().filter(char::is_ascii_digit).collect();
    ids.iter().any(|id| {
        let value = id.value.rsplit(':').next().unwrap_or(&id.value);
        if id.kind == "phone" {
            let national = value
                .strip_prefix("+86")
                .unwrap_or(value.trim_start_matches('+'));
            national.len() >= 7 && digits.contains(national)
        } else {
            value.len() >= 3 && lower.contains(&value.to_lowercase())
        }
    })
}

/// Removes lines naming the person from every `*.rejects.csv` under the data directory.
fn scrub_rejects(dir: &Path, ids: &[Identifier]) -> std::io::Result<u64> {
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                if !path.ends_with("log") && !path.ends_with("lake") {
                    stack.push(path);
                }
                continue;
            }
            if !path.to_string_lossy().ends_with(".rejects.csv") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let kept: Vec<&str> = text.lines().filter(|l| !names(l, ids)).collect();
            let dropped = text.lines().count() - kept.len();
            if dropped > 0 {
                removed += dropped as u64;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, kept.join("\n") + "\n")?;
                std::fs::rename(&tmp, &path)?;
            }
        }
    }
    Ok(removed)
}

/// Erases `profile` from every store; records and returns the request.
pub fn erase(
    engine: &Engine,
    tagging: Option<&portrait_tagging::service::Tagging>,
    realtime: Option<&portrait_realtime::service::Service>,
    profile: ProfileId,
) -> Result<ErasureRecord, ErasureError> {
    let requested_at = portrait_core::time::now();
    let report = engine.erase(profile)?;
    let mut record = ErasureRecord {
        id: format!("er_{:016x}", rand::random::<u64>()),
        profile: report.profile,
        status: "completed".into(),
        requested_at: portrait_core::time::format_iso(requested_at),
        completed_at: None,
        events: report.events.len(),
        identifiers: report.identifiers,
        lake_rows: 0,
        reject_lines: 0,
        error: None,
    };
    let derived = (|| -> Result<(), ErasureError> {
        record.lake_rows = portrait_lake::purge(engine, &report.events)
            .map_err(|e| ErasureError::Derived(format!("lake: {e}")))?
            .rows;
        record.reject_lines = scrub_rejects(engine.dir(), &report.values)
            .map_err(|e| ErasureError::Derived(format!("reject files: {e}")))?;
        if let Some(t) = tagging {
            t.erase(report.profile)
                .map_err(|e| ErasureError::Derived(format!("tag store: {e}")))?;
        }
        // Real-time state and the change stream: through the running engine, or on disk.
        match realtime {
            Some(rt) => rt
                .forget(vec![report.profile])
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => portrait_realtime::service::erase_offline(
                &engine.dir().join("realtime"),
                &[report.profile],
            )
            .map(|_| ())
            .map_err(|e| e.to_string()),
        }
        .map_err(|e| ErasureError::Derived(format!("real-time state: {e}")))?;
        let mut ids = portrait_tagstore::RoaringBitmap::new();
        ids.insert(report.profile);
        portrait_history::History::for_data_dir(engine.dir())
            .and_then(|h| h.erase(&ids))
            .map_err(|e| ErasureError::Derived(format!("tag history: {e}")))?;
        Ok(())
    })();
    if let Err(e) = &derived {
        record.status = "failed".into();
        record.error = Some(e.to_string());
    }
    record.completed_at = Some(portrait_core::time::format_iso(portrait_core::time::now()));
    append(engine.dir(), &record)
        .map_err(|e| ErasureError::Derived(format!("erasure log: {e}")))?;
    tracing::info!(request = %record.id, profile = record.profile, status = %record.status, "erasure");
    derived.map(|()| record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_lines_naming_the_person_are_found() {
        let ids = vec![
            Identifier::new("phone", "+8613800001111"),
            Identifier::new("email", "a@b.cn"),
        ];
        assert!(names("3,bad time,\"T1,138-0000-1111,x\"", &ids));
        assert!(names("4,reason,\"A@B.CN\"", &ids));
        assert!(!names("5,reason,\"13900002222\"", &ids));
    }
}

/// HTTP handlers of erasure and key rotation (admin only; see `routes::ROUTES`).
pub mod http {
    use std::sync::Arc;

    use axum::extract::{Path, State};
    use axum::Json;
    use portrait_core::ProfileId;
    use serde::Deserialize;
    use serde_json::{json, Value};

    use crate::error::ApiError;
    use crate::App;

    fn failed(e: super::ErasureError) -> ApiError {
        match e {
            super::ErasureError::Store(s) => s.into(),
            super::ErasureError::Derived(m) => ApiError::Internal(m),
        }
    }

    async fn run(app: Arc<App>, profile: ProfileId) -> Result<super::ErasureRecord, ApiError> {
        tokio::task::spawn_blocking(move || {
            let rt = app.realtime.as_ref().map(|l| l.service.as_ref());
            super::erase(&app.engine, Some(&app.tagging), rt, profile)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(failed)
    }

    /// `DELETE /api/v1/profiles/{id}`: erases the person (synchronously, every store).
    pub async fn erase_profile(
        State(app): State<Arc<App>>,
        Path(id): Path<ProfileId>,
    ) -> Result<Json<Value>, ApiError> {
        Ok(Json(json!(run(app, id).await?)))
    }

    /// `DELETE /api/v1/profiles/by-identifier/{type}/{value}`.
    pub async fn erase_by_identifier(
        State(app): State<Arc<App>>,
        Path((kind, value)): Path<(String, String)>,
    ) -> Result<Json<Value>, ApiError> {
        let id = crate::admin::profile_of(&app, &kind, &value)?;
        Ok(Json(json!(run(app, id).await?)))
    }

    /// Body of a bulk erasure.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Bulk {
        /// Identifiers `{type, value}` of the people to erase.
        #[serde(default)]
        pub identifiers: Vec<crate::admin::Unmerge>,
        /// Profile ids to erase.
        #[serde(default)]
        pub profiles: Vec<ProfileId>,
    }

    /// A bulk erasure file: one `type:value` per line (blank lines and `#` comments skipped),
    /// e.g. `phone:13800000000`. A bad line is a 400 naming it; nothing is erased then.
    fn bulk_from_lines(body: &[u8]) -> Result<Bulk, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the erasure file is not UTF-8".into()))?;
        let mut identifiers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, value) = line.split_once(':').ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "line {}: `{line}` is not `type:value` (e.g. phone:13800000000)",
                    n + 1
                ))
            })?;
            identifiers.push(crate::admin::Unmerge {
                kind: kind.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
        Ok(Bulk {
            identifiers,
            profiles: Vec::new(),
        })
    }

    /// `POST /api/v1/erasures`: erases many people; identifiers that match nobody are counted.
    /// The body is JSON `{identifiers, profiles}` or a file of `type:value` lines.
    pub async fn erase_bulk(
        State(app): State<Arc<App>>,
        body: axum::body::Bytes,
    ) -> Result<Json<Value>, ApiError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let req: Bulk = if first == Some(b'{') {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?
        } else {
            bulk_from_lines(&body)?
        };
        let mut ids = req.profiles.clone();
        let mut unknown = 0usize;
        for i in &req.identifiers {
            let ident = crate::admin::identifier(&app, &i.kind, &i.value)?;
            match app.engine.state().book.by_identifier(&ident) {
                Some(id) => ids.push(id),
                None => unknown += 1,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut done = Vec::new();
        for id in ids {
            match run(app.clone(), id).await {
                Ok(r) => done.push(json!(r)),
                Err(ApiError::NotFound(_)) => unknown += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(Json(json!({ "erasures": done, "not_found": unknown })))
    }

    /// `GET /api/v1/erasures`: every erasure request, newest first.
    pub async fn list(State(app): State<Arc<App>>) -> Json<Value> {
        let mut all = super::list(app.engine.dir());
        all.reverse();
        Json(json!({ "erasures": all }))
    }

    /// `GET /api/v1/erasures/{id}`: one request's status.
    pub async fn get(
        State(app): State<Arc<App>>,
        Path(id): Path<String>,
    ) -> Result<Json<Value>, ApiError> {
        super::list(app.engine.dir())
            .into_iter()
            .find(|r| r.id == id)
            .map(|r| Json(json!(r)))
            .ok_or_else(|| ApiError::NotFound(format!("no erasure request {id}")))
    }

    /// `POST /api/v1/keys/rotate`: a new data key; every record is re-encrypted in place while
    /// reads continue.
    pub async fn rotate(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
        let engine = app.clone();
        let n = tokio::task::spawn_blocking(move || engine.engine.rotate_data_key())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| match e {
                portrait_store::StoreError::Crypto(m) => ApiError::Conflict(m),
                other => other.into(),
            })?;
        Ok(Json(json!({ "reencrypted": n })))
    }
}
