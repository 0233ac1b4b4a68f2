//! Handlers of the tag history routes (标签演化轨迹): transitions between two dates (Sankey
//! data), entered/exited/stayed, population series and paths are aggregates (analysts);
//! a profile's trail is member data (operators).
//!
//! Dates are `YYYY-MM-DD` (Asia/Shanghai) or RFC 3339 instants (their local date). An
//! `audience` parameter restricts a query to a saved audience's current members.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use portrait_history::{Day, Every, History, HistoryError};
use portrait_tagstore::RoaringBitmap;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::tagging::blocking;
use crate::App;

fn api(e: HistoryError) -> ApiError {
    match e {
        HistoryError::UnknownTag(_) | HistoryError::NoSnapshot { .. } => {
            ApiError::NotFound(e.to_string())
        }
        HistoryError::Invalid(_) | HistoryError::NotCategorical(_) => {
            ApiError::BadRequest(e.to_string())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

fn history(app: &App) -> Result<History, ApiError> {
    History::for_data_dir(app.engine.dir()).map_err(api)
}

fn day(name: &str, text: Option<&str>) -> Result<Day, ApiError> {
    let text = text.ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name}")))?;
    portrait_history::parse_date_or_instant(text)
        .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
}

fn audience(app: &App, name: Option<&str>) -> Result<Option<RoaringBitmap>, ApiError> {
    match name {
        Some(n) if !n.is_empty() => Ok(Some(app.tagging.audience_members(n)?)),
        _ => Ok(None),
    }
}

/// Query of the aggregate history routes.
#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    /// First date.
    pub from: Option<String>,
    /// Second (last) date.
    pub to: Option<String>,
    /// A saved audience to restrict to.
    pub audience: Option<String>,
    /// `change`: the value (default: has any value).
    pub value: Option<String>,
    /// `paths`: a grid (1d, 1w, 1mo) from `from`; default every snapshot date in range.
    pub every: Option<String>,
    /// `paths`: merge repeats on consecutive dates (default true).
    pub collapse: Option<bool>,
    /// `paths`: how many (default 20).
    pub limit: Option<usize>,
}

/// `GET /api/v1/history`: tags with history, their first and last dates, retention, storage.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let h = history(&app)?;
        let mut tags = Vec::new();
        for name in h.tags().map_err(api)? {
            let d = h.dates(&name).map_err(api)?;
            tags.push(json!({
                "tag": name,
                "dates": d.len(),
                "first": d.first().map(|x| portrait_history::format_day(*x)),
                "last": d.last().map(|x| portrait_history::format_day(*x)),
            }));
        }
        let storage = h.storage().map_err(api)?;
        Ok(Json(json!({
            "retention_days": h.retention_days(),
            "tags": tags,
            "storage": storage,
        })))
    })
    .await
}

/// Runs a history query over the range `from..to` of `q` (restricted to `q.audience`) on the
/// blocking pool and answers its result as JSON.
async fn ranged<T: serde::Serialize>(
    app: Arc<App>,
    q: RangeQuery,
    query: impl FnOnce(&History, &RangeQuery, Day, Day, Option<&RoaringBitmap>) -> Result<T, HistoryError>
        + Send
        + 'static,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let (from, to) = (day("from", q.from.as_deref())?, day("to", q.to.as_deref())?);
        let within = audience(&app, q.audience.as_deref())?;
        let answer = query(&history(&app)?, &q, from, to, within.as_ref()).map_err(api)?;
        Ok(Json(json!(answer)))
    })
    .await
}

/// `GET /api/v1/history/{tag}/transitions?from=&to=&audience=`: `[{from, to, count}]`.
pub async fn transitions(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    ranged(app, q, move |h, _, from, to, within| {
        h.transitions(&tag, from, to, within)
    })
    .await
}

/// `GET /api/v1/history/{tag}/change?value=&from=&to=&audience=`: entered / exited / stayed.
pub async fn change(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    ranged(app, q, move |h, q, from, to, within| {
        h.change(&tag, q.value.as_deref(), from, to, within)
    })
    .await
}

/// `GET /api/v1/history/{tag}/population?from=&to=&audience=`: counts per value per date.
pub async fn population(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    ranged(app, q, move |h, _, from, to, within| {
        h.population(&tag, from, to, within)
    })
    .await
}

/// `GET /api/v1/history/{tag}/paths?from=&to=&every=&collapse=&limit=&audience=`.
pub async fn paths(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let (from, to) = (day("from", q.from.as_deref())?, day("to", q.to.as_deref())?);
        let h = history(&app)?;
        let dates = match q.every.as_deref() {
            Some(e) => {
                let e: Every = e.parse().map_err(api)?;
                portrait_history::dates(from, to, e).map_err(api)?
            }
            None => h
                .dates(&tag)
                .map_err(api)?
                .into_iter()
                .filter(|d| *d >= from && *d <= to)
                .collect(),
        };
        let within = audience(&app, q.audience.as_deref())?;
        let paths = h
            .paths(
                &tag,
                &dates,
                within.as_ref(),
                q.collapse.unwrap_or(true),
                q.limit.unwrap_or(20).min(1000),
            )
            .map_err(api)?;
        Ok(Json(json!({
            "dates": dates.iter().map(|d| portrait_history::format_day(*d)).collect::<Vec<_>>(),
            "paths": paths,
        })))
    })
    .await
}

/// Query of `GET /api/v1/profiles/{id}/history`.
#[derive(Debug, Default, Deserialize)]
pub struct TrailQuery {
    /// Comma-separated tags (numeric tags only when named).
    pub tags: Option<String>,
    /// First date.
    pub from: Option<String>,
    /// Last date.
    pub to: Option<String>,
}

/// `GET /api/v1/profiles/{id}/history?tags=&from=&to=`: the profile's tag changes.
pub async fn profile_trail(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    Query(q): Query<TrailQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let from = q
            .from
            .as_deref()
            .map(|t| day("from", Some(t)))
            .transpose()?;
        let to = q.to.as_deref().map(|t| day("to", Some(t))).transpose()?;
        let tags: Option<Vec<String>> = q.tags.as_deref().map(|t| {
            t.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        let trail = history(&app)?
            .trail(id, tags.as_deref(), from, to)
            .map_err(api)?;
        Ok(Json(json!({"profile_id": id, "changes": trail})))
    })
    .await
}
