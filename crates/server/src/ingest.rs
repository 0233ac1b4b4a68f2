//! The Segment-compatible Tracking API: `/v1/{identify,track,page,screen,group,alias}`,
//! `/v1/batch` and `/v1/import`.
//!
//! A request is decoded (gzip by header or by magic bytes, whatever the content type — the
//! RudderStack node SDK sends gzipped JSON as `application/x-www-form-urlencoded`),
//! authenticated (HTTP Basic with the write key as user name, or `writeKey` in the body),
//! validated as a whole (one bad message refuses the request; nothing is stored), then handed
//! to the engine. The 200 is sent only after the engine has synced the messages to the log.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine as _;
use portrait_core::segment::{parse_raw_message, Envelope, RawMessage};
use portrait_core::{time, Message, MessageKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::App;

/// Size limits, as Segment's.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single message, in bytes of JSON.
    pub message_bytes: usize,
    /// Largest request body after decompression.
    pub batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_bytes: 32 * 1024,
            batch_bytes: 500 * 1024,
        }
    }
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    context: Option<&'a RawValue>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<String>,
}

/// Reads the body within the limit and undoes gzip.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge {
        message: format!("request body exceeds the {limit}-byte limit"),
        index: None,
    };
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let gzip_header = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !(gzip_header || raw.starts_with(&[0x1f, 0x8b])) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::InvalidJson(format!("body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out.into())
}

fn basic_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(k, _)| k)
            .to_string(),
    )
}

fn json_error(e: serde_json::Error) -> ApiError {
    ApiError::InvalidJson(format!("body is not valid JSON: {e}"))
}

/// `POST /v1/batch` and `/v1/import`.
pub async fn batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, app.limits.batch_bytes).await?;
    let parsed: BatchBody<'_> = serde_json::from_slice(&bytes).map_err(json_error)?;
    let source = authenticate(&app, &headers, parsed.write_key.as_deref())?;
    let sent_at = match &parsed.sent_at {
        Some(Value::String(s)) => Some(time::parse_iso(s).ok_or_else(|| {
            ApiError::BadRequest(format!("sentAt `{s}` is not an ISO-8601 timestamp"))
        })?),
        _ => None,
    };
    let context = portrait_core::json::object_or_null(parsed.context)
        .map_err(|_| ApiError::BadRequest("context must be an object".into()))?;
    let env = Envelope {
        source,
        received_at: time::now(),
        sent_at,
        context,
        kind: None,
    };
    let mut messages = Vec::with_capacity(parsed.batch.len());
    for (index, raw) in parsed.batch.iter().enumerate() {
        if raw.get().len() > app.limits.message_bytes {
            return Err(ApiError::TooLarge {
                message: format!(
                    "message {index} is {} bytes; the limit is {}",
                    raw.get().len(),
                    app.limits.message_bytes
                ),
                index: Some(index),
            });
        }
        let message = RawMessage::parse(raw.get()).map_err(json_error)?;
        messages.push(parse_one(&app, &message, &env, index)?);
    }
    commit(&app, messages).await
}

/// `POST /v1/{identify,track,page,screen,group,alias}`.
pub async fn single(
    State(app): State<Arc<App>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let kind = MessageKind::parse(&kind)
        .ok_or_else(|| ApiError::NotFound(format!("no endpoint /v1/{kind}")))?;
    let bytes = read_body(&headers, body, app.limits.message_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::InvalidJson(format!("body is not valid UTF-8: {e}")))?;
    let message = RawMessage::parse(text).map_err(json_error)?;
    let source = authenticate(&app, &headers, message.write_key().as_deref())?;
    let env = Envelope {
        source,
        received_at: time::now(),
        kind: Some(kind),
        ..Default::default()
    };
    let message = parse_one(&app, &message, &env, 0)?;
    commit(&app, vec![message]).await
}

fn authenticate(app: &App, headers: &HeaderMap, body_key: Option<&str>) -> Result<u32, ApiError> {
    let key = basic_key(headers)
        .or_else(|| body_key.map(str::to_string))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing write key: send HTTP Basic auth with the write key as user name".into(),
            )
        })?;
    app.engine
        .sources()
        .by_key(&key)
        .map(|s| s.id)
        .ok_or_else(|| ApiError::Unauthorized("unknown write key".into()))
}

fn parse_one(
    app: &App,
    message: &RawMessage<'_>,
    env: &Envelope<'_>,
    index: usize,
) -> Result<Message, ApiError> {
    parse_raw_message(message, env, app.engine.identity())
        .map(|p| p.message)
        .map_err(|e| ApiError::InvalidMessage {
            index,
            field: e.field,
            // A reason may quote a value: no phone number or e-mail address goes back out.
            reason: portrait_store::views::scrub_text(&e.reason).unwrap_or(e.reason),
        })
}

async fn commit(app: &App, messages: Vec<Message>) -> Result<Json<Value>, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.engine.submit(messages, move |r| {
        let _ = tx.send(r);
    })?;
    let report = rx
        .await
        .map_err(|_| ApiError::Internal("the engine stopped".into()))??;
    Ok(Json(json!({
        "success": true,
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "suppressed": report.suppressed,
    })))
}
