//! Handlers of the tag engine's admin routes: definitions and their versions, computations,
//! per-profile explanations, audiences (preview, save, export).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use portrait_tagging::service::{
    BatchEngine, ComputeOptions, ExportFormat, ExportRequest, Tagging,
};
use portrait_tagstore::{Distribution, StoredValue};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{Caller, Role};
use crate::error::ApiError;
use crate::App;

fn tagging(app: &App) -> Arc<Tagging> {
    app.tagging.clone()
}

/// Runs blocking work (engine, lake and file access) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

fn iso(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| json!(portrait_core::time::format_iso(m)))
}

/// A stored value as JSON.
pub fn stored_json(v: &StoredValue) -> Value {
    match v {
        StoredValue::Bool(b) => json!(b),
        StoredValue::Label(s) => json!(s),
        StoredValue::Num(n) => json!(n),
    }
}

/// The `tags` object of a profile: `{name: value}`.
pub fn profile_tags(app: &App, id: u32) -> Value {
    let mut map: serde_json::Map<String, Value> = app
        .tagging
        .profile_tags(id)
        .iter()
        .map(|(n, v)| (n.clone(), stored_json(v)))
        .collect();
    // Realtime tags: the value as of the last event or timer, not of the last batch.
    if let Some(live) = &app.realtime {
        for (n, v) in live.service.values_json(id) {
            if v.is_null() {
                map.remove(&n);
            } else {
                map.insert(n, v);
            }
        }
    }
    Value::Object(map)
}

/// The saved audiences a profile is in right now, by the real-time engine (audiences over
/// realtime tags and traits).
pub fn profile_audiences(app: &App, id: u32) -> Value {
    match &app.realtime {
        Some(live) => json!(live.service.engine().memberships(id)),
        None => json!([]),
    }
}

/// Query of `POST /api/v1/tags`.
#[derive(Debug, Deserialize)]
pub struct ApplyQuery {
    /// Publish the new versions at once.
    #[serde(default)]
    pub publish: bool,
}

/// Brings the real-time engine's definitions in step with the catalog (off the async
/// workers: a change rebuilds the engine's state from the event log).
async fn resync(app: &Arc<App>) -> Result<(), ApiError> {
    let app = app.clone();
    blocking(move || {
        crate::realtime::sync_definitions(&app);
        Ok(())
    })
    .await
}

/// `POST /api/v1/tags`: a YAML body of definitions.
pub async fn apply(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ApplyQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8 YAML".into()))?;
    let t = tagging(&app);
    let report =
        blocking(move || Ok(t.apply(&text, "<request>", &caller.name, q.publish)?)).await?;
    if !report.published.is_empty() {
        resync(&app).await?;
    }
    let tags: Vec<Value> = report
        .tags
        .iter()
        .map(|(n, v, created)| json!({"name": n, "version": v, "created": created, "published": report.published.contains(n)}))
        .collect();
    Ok(Json(json!({"tags": tags, "warnings": report.warnings})))
}

/// `GET /api/v1/tags`.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = app
        .tagging
        .with_catalog(|c| c.tags().map(|e| tag_summary(c, e)).collect());
    Ok(Json(json!({"tags": items})))
}

fn tag_summary(
    c: &portrait_tagging::catalog::Catalog,
    e: &portrait_tagging::catalog::TagEntry,
) -> Value {
    let (used_tags, used_audiences) = c.used_by(&e.name);
    let latest = e.latest();
    json!({
        "name": e.name,
        "state": latest.map(|v| v.state),
        "latest_version": latest.map(|v| v.version),
        "published_version": e.published().map(|v| v.version),
        "reads": latest.map(|v| &v.lineage),
        "used_by": {"tags": used_tags, "audiences": used_audiences},
        "last_computed": e.last_run.as_ref().map(|r| json!({
            "at": portrait_core::time::format_iso(r.at),
            "as_of": portrait_core::time::format_iso(r.as_of),
            "duration_ms": r.duration_ms,
            "population": r.population,
            "version": r.version,
        })),
        "last_used": iso(e.last_used),
    })
}

/// `GET /api/v1/tags/{name}`: the tag with every version.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // Windows reaching past the retention of what the tag reads (compiled outside the
    // catalog's lock, which the check takes too).
    let (t, n) = (tagging(&app), name.clone());
    let retention = blocking(move || Ok(t.retention_flags(&n).unwrap_or_default())).await?;
    app.tagging.with_catalog(|c| {
        let e = c
            .tag(&name)
            .ok_or_else(|| ApiError::NotFound(format!("unknown tag {name:?}")))?;
        let mut v = tag_summary(c, e);
        v["retention_warnings"] = json!(retention);
        v["versions"] = json!(e
            .versions
            .iter()
            .map(|v| json!({
                "version": v.version,
                "state": v.state,
                "definition": v.definition,
                "created_at": portrait_core::time::format_iso(v.created_at),
                "created_by": v.created_by,
                "published_at": iso(v.published_at),
            }))
            .collect::<Vec<_>>());
        Ok(Json(v))
    })
}

/// Query naming a version.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    /// The version (default the latest).
    pub version: Option<u32>,
}

/// `GET /api/v1/tags/{name}/impact`.
pub async fn impact(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    let t = tagging(&app);
    let i = blocking(move || Ok(t.impact(&name, q.version)?)).await?;
    Ok(Json(json!(i)))
}

/// `POST /api/v1/tags/{name}/publish`.
pub async fn publish(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    let v = app.tagging.publish(&name, q.version)?;
    resync(&app).await?;
    Ok(Json(json!({"name": name, "published_version": v})))
}

/// `POST /api/v1/tags/{name}/archive`.
pub async fn archive(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.tagging.archive(&name)?;
    resync(&app).await?;
    Ok(Json(json!({"name": name, "state": "archived"})))
}

/// `GET /api/v1/tags/{name}/distribution`: counts per value (aggregates only).
pub async fn distribution(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snap = app.tagging.snapshot();
    let d = snap
        .distribution(&name)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    let body = match d {
        Distribution::Bool {
            true_count,
            false_count,
        } => json!({"kind": "bool", "true": true_count, "false": false_count}),
        Distribution::Enum(values) => {
            json!({"kind": "enum", "values": values.iter().map(|(v, n)| json!({"value": v, "count": n})).collect::<Vec<_>>()})
        }
        Distribution::Numeric(s) => json!({"kind": "numeric", "summary": format!("{s:?}")}),
    };
    Ok(Json(
        json!({"name": name, "as_of": iso(app.tagging.as_of()), "distribution": body}),
    ))
}

/// Query of `GET /api/v1/tags/{name}/sql`.
#[derive(Debug, Deserialize)]
pub struct SqlQuery {
    /// datafusion (default), duckdb, clickhouse.
    pub dialect: Option<String>,
}

/// `GET /api/v1/tags/{name}/sql`: the compiled plan and the fused SQL.
pub async fn plan_sql(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<SqlQuery>,
) -> Result<Json<Value>, ApiError> {
    let name_of = q.dialect.as_deref().unwrap_or("datafusion");
    let dialect = portrait_batch::Dialect::parse(name_of).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "dialect {name_of:?}: {}",
            portrait_batch::Dialect::NAMES
        ))
    })?;
    let (plan, _) = app.tagging.plan(Some(&[name]))?;
    let as_of = app.tagging.as_of().unwrap_or_else(portrait_core::time::now);
    let sql = portrait_batch::to_sql(&plan, as_of, dialect)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(
        json!({"plan": plan.to_string(), "sql": sql, "as_of": portrait_core::time::format_iso(as_of)}),
    ))
}

/// Body of `POST /api/v1/compute`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeBody {
    /// RFC 3339 instant (default now).
    pub as_of: Option<String>,
    /// Only these tags.
    pub tags: Option<Vec<String>>,
    /// kernel (default) or datafusion.
    pub engine: Option<String>,
}

/// `POST /api/v1/compute`: computes tags now (compacting new events first).
pub async fn compute(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ComputeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ComputeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?
    };
    let as_of = match req.as_of.as_deref() {
        Some(t) => Some(portrait_core::time::parse_iso(t).ok_or_else(|| {
            ApiError::BadRequest(format!("as_of {t:?} is not an RFC 3339 instant"))
        })?),
        None => None,
    };
    let engine_name = req.engine.as_deref().unwrap_or("kernel");
    let engine = BatchEngine::parse(engine_name).ok_or_else(|| {
        ApiError::BadRequest(format!("engine {engine_name:?}: kernel or datafusion"))
    })?;
    let t = tagging(&app);
    let opts = ComputeOptions {
        as_of,
        tags: req.tags,
        engine,
        skip_compaction: false,
    };
    let report = blocking(move || {
        let report = t.compute(&opts, &mut |_| {})?;
        portrait_history::record_computation(&t, report.as_of)
            .map_err(|e| ApiError::Internal(format!("tag history: {e}")))?;
        Ok(report)
    })
    .await?;
    Ok(Json(json!(report)))
}

/// `GET /api/v1/profiles/{id}/tags/{name}/explain`.
pub async fn explain_profile(
    State(app): State<Arc<App>>,
    Path((id, name)): Path<(u32, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = tagging(&app);
    let e = blocking(move || Ok(t.explain_profile(id, &name)?)).await?;
    let stored = app
        .tagging
        .profile_tags(id)
        .into_iter()
        .find(|(n, _)| *n == e.tag)
        .map(|(_, v)| stored_json(&v));
    let mut v = json!(e);
    v["stored_value"] = stored.unwrap_or(Value::Null);
    v["as_of"] = json!(portrait_core::time::format_iso(e.as_of));
    Ok(Json(v))
}

/// Body of `POST /api/v1/audiences/preview`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// The audience expression.
    pub expression: String,
    /// Sample size (operators and admins only; default 10, at most 1000).
    pub sample: Option<usize>,
}

/// `POST /api/v1/audiences/preview`: count (and, for operators, a sample of ids).
pub async fn preview(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: PreviewBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?;
    let started = std::time::Instant::now();
    let members_allowed = caller.role >= Role::Operator;
    let n = if members_allowed {
        req.sample.unwrap_or(10).min(1000)
    } else {
        0
    };
    let p = app.tagging.preview(&req.expression, n)?;
    let mut v = json!({
        "count": p.count,
        "universe": p.universe,
        "as_of": iso(p.as_of),
        "tags": p.tags,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if members_allowed {
        v["sample"] = json!(p.sample);
    }
    Ok(Json(v))
}

/// Query of `POST /api/v1/audiences`.
#[derive(Debug, Deserialize)]
pub struct SaveQuery {
    /// Save as a draft (default: published at once).
    #[serde(default)]
    pub draft: bool,
}

/// `POST /api/v1/audiences` with an [`AudienceSpec`](portrait_tagging::service::AudienceSpec).
pub async fn save(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SaveQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec: portrait_tagging::service::AudienceSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?;
    let r = app.tagging.save_audience(&spec, &caller.name, q.draft)?;
    resync(&app).await?;
    let (version, created) = match r {
        portrait_tagging::catalog::Applied::Created(v) => (v, true),
        portrait_tagging::catalog::Applied::Unchanged(v) => (v, false),
    };
    let size = app
        .tagging
        .preview(&spec.expression, 0)
        .map(|p| p.count)
        .ok();
    Ok(Json(
        json!({"name": spec.name, "version": version, "created": created, "size": size}),
    ))
}

/// `GET /api/v1/audiences`.
pub async fn audiences(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = app
        .tagging
        .with_catalog(|c| c.audiences().map(audience_json).collect());
    Ok(Json(json!({"audiences": items})))
}

fn audience_json(a: &portrait_tagging::catalog::AudienceEntry) -> Value {
    json!({
        "name": a.name,
        "versions": a.versions,
        "sizes": a.sizes.iter().map(|s| json!({
            "at": portrait_core::time::format_iso(s.at),
            "as_of": portrait_core::time::format_iso(s.as_of),
            "size": s.size,
        })).collect::<Vec<_>>(),
        "last_used": iso(a.last_used),
    })
}

/// `GET /api/v1/audiences/{name}`.
pub async fn audience(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.tagging.with_catalog(|c| {
        c.audience(&name)
            .map(|a| Json(audience_json(a)))
            .ok_or_else(|| ApiError::NotFound(format!("unknown audience {name:?}")))
    })
}

/// Query of the export.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    /// Identifier type per member.
    pub identifier: String,
    /// Scope prefix (WeChat app id).
    pub scope: Option<String>,
    /// Consent channel (default from the identifier type).
    pub channel: Option<String>,
    /// Consent purpose (default marketing).
    pub purpose: Option<String>,
    /// `false` exports without a consent check.
    pub consent: Option<bool>,
    /// csv (default) or jsonl.
    pub format: Option<String>,
}

/// `GET /api/v1/audiences/{name}/export`: members with one identifier each; the counts of
/// members skipped (no identifier, no consent) are in headers `X-Portrait-Skipped-*`.
pub async fn export(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let format_name = q.format.as_deref().unwrap_or("csv");
    let format = ExportFormat::parse(format_name)
        .ok_or_else(|| ApiError::BadRequest(format!("format {format_name:?}: csv or jsonl")))?;
    let t = tagging(&app);
    let req = ExportRequest {
        identifier: q.identifier.clone(),
        scope: q.scope.clone(),
        channel: q.channel.clone(),
        purpose: q.purpose.clone().unwrap_or_else(|| "marketing".into()),
        check_consent: q.consent.unwrap_or(true),
    };
    let export = blocking(move || {
        let members = t.audience_members(&name)?;
        Ok(t.export(&members, &req)?)
    })
    .await?;
    let text = export.render(&q.identifier, format);
    let ctype = format.content_type();
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::HeaderName::from_static("x-portrait-members"),
                export.members.to_string(),
            ),
            (
                header::HeaderName::from_static("x-portrait-exported"),
                export.rows.len().to_string(),
            ),
            (
                header::HeaderName::from_static("x-portrait-skipped-no-identifier"),
                export.skipped_no_identifier.to_string(),
            ),
            (
                header::HeaderName::from_static("x-portrait-skipped-no-consent"),
                export.skipped_no_consent.to_string(),
            ),
        ],
        text,
    ))
}
