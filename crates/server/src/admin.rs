//! The admin API's handlers under `/api/v1`. Which role may call which is declared in
//! [`crate::routes::ROUTES`]; handlers of member-level data get the [`Caller`] and mask
//! personal information for every role below admin (`portrait_store::views::mask_*`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use portrait_core::{Identifier, ProfileId};
use portrait_store::views::{self, merges_json, profile_json};
use portrait_store::SourceKind;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{Caller, Role};
use crate::error::ApiError;
use crate::App;

/// Body of `POST /api/v1/sources`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    /// Unique name.
    pub name: String,
    /// Channel kind.
    pub kind: String,
    /// A chosen write key (optional).
    #[serde(default)]
    pub write_key: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))
}

/// `GET /api/v1/sources`: write keys are shown to admins only.
pub async fn list_sources(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let mut sources = json!(app.engine.sources().list());
    if caller.role < Role::Admin {
        for s in sources.as_array_mut().into_iter().flatten() {
            if let Some(map) = s.as_object_mut() {
                map.remove("write_keys");
            }
        }
    }
    Json(json!({ "sources": sources }))
}

/// `POST /api/v1/sources`.
pub async fn add_source(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewSource = parse_body(&body)?;
    let kind = SourceKind::parse(&req.kind)?;
    let source = app
        .engine
        .sources_mut()
        .add(&req.name, kind, req.write_key.as_deref())?;
    Ok((StatusCode::CREATED, Json(json!(source))))
}

/// Body of `PATCH /api/v1/sources/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePatch {
    /// New trait priority.
    pub priority: i32,
}

/// `PATCH /api/v1/sources/{name}`: sets the trait priority.
pub async fn patch_source(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: SourcePatch = parse_body(&body)?;
    let source = app
        .engine
        .sources_mut()
        .set_priority(&name, req.priority)
        .map_err(not_found)?;
    app.engine.sync_priorities();
    Ok(Json(json!(source)))
}

fn not_found(e: portrait_store::StoreError) -> ApiError {
    match e {
        portrait_store::StoreError::Source(m) if m.starts_with("no source") => {
            ApiError::NotFound(m)
        }
        other => other.into(),
    }
}

/// `POST /api/v1/sources/{name}/keys`: adds a write key.
pub async fn add_key(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = app
        .engine
        .sources_mut()
        .add_key(&name, None)
        .map_err(not_found)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "source": name, "write_key": key })),
    ))
}

/// `GET /api/v1/stats`.
pub async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let state = app.engine.state();
    let sources = app.engine.sources();
    let per_source: serde_json::Map<String, Value> = state
        .stats
        .per_source
        .iter()
        .map(|(s, n)| (sources.name(*s).to_string(), json!(n)))
        .collect();
    Json(json!({
        "profiles": state.book.live(),
        "identifiers": state.book.identifiers(),
        "merges": state.book.merges(),
        "unmerges": state.stats.unmerges,
        "events": state.stats.events,
        "duplicates": state.stats.duplicates,
        "events_per_source": per_source,
    }))
}

/// A profile as `caller` may see it.
fn profile_value(app: &App, id: ProfileId, caller: &Caller) -> Result<Value, ApiError> {
    let state = app.engine.state();
    let p = state
        .book
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no profile {id}")))?;
    let mut view = profile_json(p, &app.engine.sources());
    view["tags"] = crate::tagging::profile_tags(app, p.id);
    view["audiences"] = crate::tagging::profile_audiences(app, p.id);
    if !caller.sees_clear_pii() {
        views::mask_profile(&mut view);
    }
    Ok(view)
}

/// `GET /api/v1/profiles/{id}` (a merged-away id answers with its survivor).
pub async fn profile(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ProfileId>,
) -> Result<Json<Value>, ApiError> {
    profile_value(&app, id, &caller).map(Json)
}

/// Normalises an identifier from a URL or body. Errors name the type, never the value.
pub(crate) fn identifier(app: &App, kind: &str, value: &str) -> Result<Identifier, ApiError> {
    use portrait_core::identity::LookupError;
    app.engine
        .identity()
        .lookup_identifier(kind, value)
        .map_err(|e| match e {
            LookupError::UnknownType { .. } => ApiError::BadRequest(e.to_string()),
            LookupError::Invalid(reason) => {
                ApiError::BadRequest(format!("invalid {kind} value: {reason}"))
            }
        })
}

/// `GET /api/v1/profiles/by-identifier/{type}/{value}`.
pub async fn by_identifier(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = profile_of(&app, &kind, &value)?;
    profile_value(&app, id, &caller).map(Json)
}

/// The profile holding an identifier given as type and raw value (404 when none does; the
/// value is never echoed).
pub(crate) fn profile_of(app: &App, kind: &str, value: &str) -> Result<ProfileId, ApiError> {
    let ident = identifier(app, kind, value)?;
    app.engine
        .state()
        .book
        .by_identifier(&ident)
        .ok_or_else(|| ApiError::NotFound(format!("no profile has this {kind}")))
}

/// Query of the timeline.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Page size (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Opaque cursor from the previous page's `next`.
    pub cursor: Option<usize>,
}

/// `GET /api/v1/profiles/{id}/events?limit=N&cursor=C`: newest first.
pub async fn events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ProfileId>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(50).clamp(1, 1000);
    let skip = page.cursor.unwrap_or(0);
    let (events, more) = app
        .engine
        .timeline(id, skip, limit)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {id}")))?;
    let sources = app.engine.sources();
    let items: Vec<Value> = events
        .iter()
        .map(|(_, m)| {
            let mut event = m.to_json(sources.name(m.source));
            if !caller.sees_clear_pii() {
                views::mask_event(&mut event);
            }
            event
        })
        .collect();
    Ok(Json(json!({
        "profile": app.engine.state().book.resolve(id),
        "events": items,
        "next": more.then_some(skip + limit),
    })))
}

/// `GET /api/v1/profiles/{id}/merges`.
pub async fn merges(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ProfileId>,
) -> Result<Json<Value>, ApiError> {
    let state = app.engine.state();
    let p = state
        .book
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no profile {id}")))?;
    let mut history = merges_json(&p.history, &app.engine.sources());
    if !caller.sees_clear_pii() {
        views::mask_merges(&mut history);
    }
    Ok(Json(json!({"profile": p.id, "merges": history})))
}

/// Body of the unmerge call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unmerge {
    /// Identifier type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier value.
    pub value: String,
}

/// `POST /api/v1/profiles/{id}/unmerge` with `{"type", "value"}`.
pub async fn unmerge(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ProfileId>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Unmerge = parse_body(&body)?;
    let ident = identifier(&app, &req.kind, &req.value)?;
    let engine = app.clone();
    let parts = tokio::task::spawn_blocking(move || {
        let parts = engine.engine.unmerge(id, ident)?;
        // The parts' real-time tags are rebuilt from their events.
        if let Some(live) = &engine.realtime {
            let mut ids = parts.clone();
            ids.push(id);
            if let Err(e) = live.service.rebuild(ids) {
                tracing::error!(error = %e, "real-time rebuild after unmerge failed");
            }
        }
        Ok::<_, portrait_store::StoreError>(parts)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let profiles: Vec<Value> = parts
        .iter()
        .filter_map(|p| profile_value(&app, *p, &caller).ok())
        .collect();
    Ok(Json(json!({ "profiles": profiles })))
}

/// `POST /api/v1/sources/{name}/import`: a multipart upload with a `mapping` part (the YAML)
/// and a `file` part (CSV, JSON lines or Parquet; the format comes from the mapping or the
/// file name). Rejected rows are listed in the answer (the first 100) and written to
/// `DIR/imports/`.
pub async fn import(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    mut form: axum::extract::Multipart,
) -> Result<Json<Value>, ApiError> {
    use portrait_import::{Format, Mapping, RejectWriter, RowContext};
    let source = app
        .engine
        .sources()
        .by_name(&name)
        .map(|s| s.id)
        .ok_or_else(|| ApiError::NotFound(format!("no source named `{name}`")))?;
    let (mut mapping, mut file, mut file_name) = (None, None, None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(format!("bad upload: {e}")))?
    {
        let part = field.name().unwrap_or_default().to_string();
        let fname = field.file_name().map(str::to_string);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::BadRequest(format!("bad upload: {e}")))?;
        match part.as_str() {
            "mapping" => mapping = Some(String::from_utf8_lossy(&bytes).to_string()),
            "file" => {
                file = Some(bytes.to_vec());
                file_name = fname;
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected part `{other}`; send `mapping` and `file`"
                )))
            }
        }
    }
    let mapping =
        mapping.ok_or_else(|| ApiError::BadRequest("missing the `mapping` part".into()))?;
    let file = file.ok_or_else(|| ApiError::BadRequest("missing the `file` part".into()))?;
    let mapping = Mapping::from_yaml(&mapping).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let format = mapping
        .format
        .or_else(|| file_name.as_deref().and_then(|n| Format::from_path(std::path::Path::new(n))))
        .ok_or_else(|| {
            ApiError::BadRequest("cannot tell the file format: set `format:` in the mapping or name the file .csv/.jsonl/.parquet".into())
        })?;
    let ctx = RowContext {
        config: app.engine.identity().clone(),
        source,
        received_at: portrait_core::time::now(),
    };
    let rows = portrait_import::read_bytes(file, format, &mapping, &ctx)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let reject_path = app
        .engine
        .dir()
        .join("imports")
        .join(format!("{}-{name}.rejects.csv", ctx.received_at));
    std::fs::create_dir_all(reject_path.parent().unwrap_or(app.engine.dir()))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let engine = app.engine.clone();
    let path = reject_path.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let mut rejects = RejectWriter::new(path);
        let summary = crate::imports::run_import(&engine, rows, &mut rejects, &mut |_| {});
        let _ = rejects.finish();
        summary
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut answer = json!({
        "summary": summary,
        "reject_file": (summary.rejected > 0).then(|| reject_path.display().to_string()),
    });
    if !caller.sees_clear_pii() {
        // Reject reasons may quote a cell.
        views::mask_tree(&mut answer["summary"]["first_rejects"]);
    }
    Ok(Json(answer))
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
}

/// A token as listed: never its secret or hash.
fn token_view(t: &crate::access::TokenEntry) -> Value {
    json!({"name": t.name, "role": t.role, "created_at": t.created_at})
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(State(app): State<Arc<App>>) -> Json<Value> {
    let tokens: Vec<Value> = app
        .access
        .with_tokens(|t| t.list().iter().map(token_view).collect());
    Json(json!({ "tokens": tokens }))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `analyst`, `operator` or `admin`.
    pub role: String,
    /// Unique name (made up when absent).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /api/v1/tokens`: the answer holds the token; it is not stored and not shown again.
pub async fn add_token(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewToken = parse_body(&body)?;
    let role = Role::parse(&req.role)?;
    let (entry, secret) = app
        .access
        .with_tokens(|t| t.add(req.name.as_deref(), role))?;
    let mut view = token_view(&entry);
    view["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/v1/tokens/{name}`.
pub async fn delete_token(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = app.access.with_tokens(|t| t.remove(&name))?;
    Ok(Json(json!({ "deleted": token_view(&removed) })))
}

/// Query of the audit log.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Entries to answer (default 100, at most 10000).
    pub limit: Option<usize>,
    /// ISO-8601 instant: only entries at or after it.
    pub since: Option<String>,
}

/// `GET /api/v1/audit?limit=N&since=ISO`: newest first.
pub async fn audit(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let since = match q.since.as_deref() {
        None => None,
        // A `+` of an offset arrives as a space when the client did not escape it.
        Some(s) => Some(
            portrait_core::time::parse_iso(s)
                .or_else(|| portrait_core::time::parse_iso(&s.replace(' ', "+")))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("since `{s}` is not an ISO-8601 instant"))
                })?,
        ),
    };
    let app2 = app.clone();
    let entries = tokio::task::spawn_blocking(move || app2.audit.read(limit, since))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("cannot read the audit log: {e}")))?;
    Ok(Json(json!({ "entries": entries })))
}

/// Body of `POST /api/v1/profiles/{id}/consent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// `sms`, `wechat_template`, `app_push`, `call`, `email`, or `all`.
    pub channel: String,
    /// `marketing` (default), `service`, `analytics`.
    #[serde(default)]
    pub purpose: Option<String>,
    /// `granted` or `denied`.
    pub state: String,
    /// Free text kept with the decision (a form id, a call recording reference).
    #[serde(default)]
    pub evidence: Option<String>,
}

/// The source consent decisions made through the API are recorded under.
pub const API_SOURCE: &str = "portrait-api";

/// `POST /api/v1/profiles/{id}/consent`: records a consent decision as a `Consent Updated` event
/// of the profile (durable, replayed, visible in the timeline), then answers the profile's consent.
pub async fn set_consent(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ProfileId>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ConsentBody = parse_body(&body)?;
    let mut props = serde_json::Map::new();
    props.insert("channel".into(), json!(req.channel));
    props.insert(
        "purpose".into(),
        json!(req.purpose.as_deref().unwrap_or("marketing")),
    );
    props.insert("state".into(), json!(req.state));
    if let Some(e) = &req.evidence {
        props.insert("evidence".into(), json!(e));
    }
    portrait_core::consent::updates(
        portrait_core::MessageKind::Track,
        Some(portrait_core::consent::CONSENT_EVENT),
        &props,
        &serde_json::Map::new(),
    )
    .map_err(|(field, reason)| {
        ApiError::BadRequest(format!("{}: {reason}", field.replace("properties.", "")))
    })?;
    let (survivor, ident) = {
        let state = app.engine.state();
        let p = state
            .book
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("no profile {id}")))?;
        let ident = p
            .identifiers
            .first()
            .cloned()
            .ok_or_else(|| ApiError::Conflict(format!("profile {id} has no identifier")))?;
        (p.id, ident)
    };
    let source = {
        let existing = app.engine.sources().by_name(API_SOURCE).map(|s| s.id);
        match existing {
            Some(s) => s,
            None => {
                app.engine
                    .sources_mut()
                    .add(API_SOURCE, SourceKind::Other, None)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .id
            }
        }
    };
    let now = portrait_core::time::now();
    let message = portrait_core::Message {
        kind: portrait_core::MessageKind::Track,
        message_id: format!("consent-{survivor}-{now}-{:08x}", rand::random::<u32>()),
        source,
        event: Some(portrait_core::consent::CONSENT_EVENT.into()),
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: now,
        received_at: now,
        sent_at: None,
        original_timestamp: None,
        traits: "{}".into(),
        properties: Value::Object(props).to_string(),
        context: json!({"actor": caller.name}).to_string(),
        identifiers: vec![ident],
    };
    let engine = app.clone();
    tokio::task::spawn_blocking(move || engine.engine.ingest(vec![message]))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let state = app.engine.state();
    let p = state
        .book
        .get(survivor)
        .ok_or_else(|| ApiError::NotFound(format!("no profile {id}")))?;
    Ok(Json(json!({
        "profile": p.id,
        "consent": views::consent_json(p, &app.engine.sources()),
    })))
}
