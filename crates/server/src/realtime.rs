//! Handlers of the real-time engine: the change stream (long poll or server-sent events),
//! webhooks and the engine's status; and the glue that starts the engine with the server and
//! keeps its definitions in step with the catalog.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portrait_realtime::service::{Options, Priority, Service};
use portrait_realtime::webhook::{WebhookError, WebhookSpec, Webhooks};
use portrait_realtime::{Audience, Kind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::App;

/// Environment variable choosing how the real-time worker and the change stream's writer are
/// scheduled: `rr` (default: `SCHED_RR` where permitted, else nice −10), `nice` (nice −10) or
/// `normal`.
pub const PRIORITY_VAR: &str = "PORTRAIT_REALTIME_PRIORITY";

/// The real-time engine and its webhooks, as the server runs them.
pub struct Live {
    /// The engine service.
    pub service: Arc<Service>,
    /// The webhooks.
    pub webhooks: Arc<Webhooks>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.webhooks.stop();
        self.service.stop();
    }
}

/// What the engine maintains: the published realtime tags and the published audiences that
/// read only them and traits.
fn definitions(
    tagging: &portrait_tagging::service::Tagging,
) -> (portrait_tags::ir::Plan, Vec<Audience>) {
    match tagging.realtime_definitions() {
        Ok((plan, audiences)) => (
            plan,
            audiences
                .into_iter()
                .map(|(name, expr)| Audience { name, expr })
                .collect(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "real-time definitions do not compile; none maintained");
            (
                portrait_tags::compile(&[], &portrait_tags::Known::default())
                    .map(|c| c.plan)
                    .unwrap_or_else(|_| unreachable!("an empty set of definitions compiles")),
                Vec::new(),
            )
        }
    }
}

/// Starts the engine for the server on `engine`'s data directory (`DIR/realtime`).
pub fn start(
    engine: &Arc<portrait_store::Engine>,
    tagging: &portrait_tagging::service::Tagging,
) -> Result<Live, String> {
    let mut options = Options::default();
    if let Ok(text) = std::env::var(PRIORITY_VAR) {
        match Priority::parse(&text) {
            Ok(p) => options.worker_priority = p,
            Err(e) => tracing::warn!(
                "{PRIORITY_VAR}: {e}; using the default ({:?})",
                options.worker_priority
            ),
        }
    }
    let (plan, audiences) = definitions(tagging);
    let dir = engine.dir().join("realtime");
    let service = Service::start(engine.clone(), &dir, plan, audiences, options)
        .map_err(|e| e.to_string())?;
    let webhooks = Webhooks::start(&dir.join("webhooks.json"), service.changes().clone())
        .map_err(|e| e.to_string())?;
    Ok(Live { service, webhooks })
}

/// Re-reads the definitions from the catalog; when they changed, the engine rebuilds its
/// state from the events. Called after every publish, archive and audience save.
pub fn sync_definitions(app: &App) {
    let Some(live) = &app.realtime else { return };
    let (plan, audiences) = definitions(&app.tagging);
    let same = {
        let rt = live.service.engine();
        *rt.plan() == plan && rt.audiences() == audiences.as_slice()
    };
    if !same {
        if let Err(e) = live.service.reload(plan, audiences) {
            tracing::error!(error = %e, "real-time definitions reload failed");
        }
    }
}

fn live(app: &App) -> Result<&Live, ApiError> {
    app.realtime
        .as_ref()
        .ok_or_else(|| ApiError::Internal("the real-time engine is not running".into()))
}

/// Query of `GET /api/v1/changes`.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    /// Changes after this cursor; 0 (the default) starts at the oldest retained.
    #[serde(default)]
    pub since: u64,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
    /// Wait up to this many ms for a change when there is none (long poll; at most 60000).
    #[serde(default)]
    pub wait: u64,
    /// Only these tag or audience names (comma-separated).
    pub names: Option<String>,
    /// Only `tag` or `audience` changes.
    pub kind: Option<String>,
}

impl ChangesQuery {
    /// The filter the query asks for.
    fn filter(&self) -> Result<impl Fn(Kind, &str) -> bool + Send + Sync + 'static, ApiError> {
        let names: Vec<String> = self
            .names
            .as_deref()
            .map(|n| {
                n.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let kind = match self.kind.as_deref() {
            None | Some("") => None,
            Some("tag") => Some(Kind::Tag),
            Some("audience") => Some(Kind::Audience),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "kind: expected tag or audience, got {other:?}"
                )))
            }
        };
        Ok(move |k: Kind, name: &str| {
            kind.is_none_or(|want| want == k)
                && (names.is_empty() || names.iter().any(|n| n == name))
        })
    }
}

/// `GET /api/v1/changes`: JSON `{changes, next, oldest, last}`; with `Accept:
/// text/event-stream`, a server-sent event stream (`id` = cursor) that stays open.
pub async fn changes(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Result<Response, ApiError> {
    let live = live(&app)?;
    let log = live.service.changes().clone();
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(q.since);
    let want = Arc::new(q.filter()?);
    if sse {
        return Ok(stream(log, since, want).into_response());
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let mut watch = log.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait.min(60_000));
    let mut cursor = since;
    // Read; while nothing matches and the caller is willing to wait, wait for more.
    let (lines, next) = loop {
        let (lines, next) = {
            let (log, want) = (log.clone(), want.clone());
            crate::tagging::blocking(move || {
                log.read_where(cursor, limit, &*want)
                    .map_err(|e| ApiError::Internal(e.to_string()))
            })
            .await?
        };
        cursor = next;
        if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
            break (lines, next);
        }
        if log.last_seq() <= cursor {
            let more = tokio::time::timeout_at(deadline, watch.wait_for(|last| *last > cursor))
                .await
                .is_ok();
            if !more {
                break (lines, next);
            }
        }
    };
    let body = format!(
        "{{\"changes\":[{}],\"next\":{next},\"oldest\":{},\"last\":{}}}",
        lines
            .iter()
            .map(|l| l.as_ref())
            .collect::<Vec<_>>()
            .join(","),
        log.first_seq(),
        log.last_seq()
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A server-sent event stream of the changes after `since`.
fn stream(
    log: Arc<portrait_realtime::changes::ChangeLog>,
    since: u64,
    want: Arc<impl Fn(Kind, &str) -> bool + Send + Sync + 'static>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut cursor = since;
        let mut watch = log.watch();
        loop {
            let read = {
                let (log, want) = (log.clone(), want.clone());
                tokio::task::spawn_blocking(move || log.read_where(cursor, 1000, &*want)).await
            };
            let Ok(Ok((lines, next))) = read else { return };
            if lines.is_empty() && next > cursor {
                cursor = next;
                continue;
            }
            if lines.is_empty() {
                // Wait for more; a comment line every 15 s keeps proxies from closing.
                let more = tokio::time::timeout(
                    Duration::from_secs(15),
                    watch.wait_for(|last| *last > cursor),
                )
                .await
                .is_ok();
                if !more && tx.send(Ok(": keep-alive\n\n".into())).await.is_err() {
                    return;
                }
                continue;
            }
            let mut chunk = String::new();
            for l in &lines {
                let seq = serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(next);
                chunk.push_str(&format!("id: {seq}\nevent: change\ndata: {l}\n\n"));
            }
            cursor = next;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream(rx));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A receiver as a stream of body chunks.
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> {
    futures_util_stream(move |cx| rx.poll_recv(cx))
}

/// A stream from a poll function (no extra dependency).
fn futures_util_stream<T>(
    f: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
) -> impl futures_core::Stream<Item = T> {
    struct PollFn<F>(F);
    impl<T, F> futures_core::Stream for PollFn<F>
    where
        F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
    {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            (self.0)(cx)
        }
    }
    PollFn(f)
}

/// `GET /api/v1/realtime`: what the engine maintains, counters, the stream's cursors.
pub async fn status(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let live = live(&app)?;
    Ok(Json(json!(live.service.status())))
}

/// `POST /api/v1/realtime/visibility/reset`: starts a new visibility-lag window (e.g. before a
/// load test or after a deploy) and returns the summary of the window it ends.
pub async fn reset_visibility(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let live = live(&app)?;
    let (readable, applied) = live.service.reset_visibility();
    Ok(Json(json!({ "ended": readable, "ended_applied": applied })))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(m) => ApiError::BadRequest(m),
            WebhookError::NotFound(m) => ApiError::NotFound(format!("no webhook {m}")),
            WebhookError::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

/// `GET /api/v1/webhooks`.
pub async fn list_webhooks(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let live = live(&app)?;
    let list: Vec<Value> = live.webhooks.list().iter().map(|w| w.public()).collect();
    Ok(Json(json!({ "webhooks": list })))
}

/// `POST /api/v1/webhooks` with `{url, secret?, kinds?, names?, since?}`.
pub async fn add_webhook(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let spec: WebhookSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidJson(format!("invalid body: {e}")))?;
    let live = live(&app)?;
    let hook = live.webhooks.add(spec)?;
    Ok((axum::http::StatusCode::CREATED, Json(hook.public())))
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn remove_webhook(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = live(&app)?;
    live.webhooks.remove(&id)?;
    Ok(Json(json!({ "removed": id })))
}
