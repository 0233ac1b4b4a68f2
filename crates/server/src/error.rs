//! The one table of API errors: each has a stable code, an HTTP status and a JSON body
//! `{"code", "message", "index"?, "field"?}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (or not the expected shape).
    #[error("{0}")]
    InvalidJson(String),
    /// One message of a request is invalid; nothing of the request was stored.
    #[error("message {index}: field `{field}`: {reason}")]
    InvalidMessage {
        /// Position in the batch (0 for single calls).
        index: usize,
        /// Offending field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A request parameter is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A tag definition or audience expression does not parse or type-check; the message holds
    /// the rendered diagnostics (`FILE:LINE:COL: error: …` with the source line and a caret).
    #[error("{0}")]
    InvalidDefinition(String),
    /// Missing or unknown write key / API token.
    #[error("{0}")]
    Unauthorized(String),
    /// A known token whose role does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// A name or key is taken.
    #[error("{0}")]
    Conflict(String),
    /// Body or message too large.
    #[error("{message}")]
    TooLarge {
        /// What exceeded which limit.
        message: String,
        /// The message index, when one message is too large.
        index: Option<usize>,
    },
    /// The engine is shedding load.
    #[error("the server is busy; retry after the delay in Retry-After")]
    Busy,
    /// A storage failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Stable code and HTTP status.
    pub fn code(&self) -> (&'static str, StatusCode) {
        match self {
            Self::InvalidJson(_) => ("invalid_json", StatusCode::BAD_REQUEST),
            Self::InvalidMessage { .. } => ("invalid_message", StatusCode::BAD_REQUEST),
            Self::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            Self::InvalidDefinition(_) => ("invalid_definition", StatusCode::BAD_REQUEST),
            Self::Unauthorized(_) => ("unauthorized", StatusCode::UNAUTHORIZED),
            Self::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            Self::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            Self::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            Self::TooLarge { .. } => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::Busy => ("busy", StatusCode::TOO_MANY_REQUESTS),
            Self::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<portrait_tagging::TaggingError> for ApiError {
    fn from(e: portrait_tagging::TaggingError) -> Self {
        use portrait_tagging::TaggingError as E;
        match e {
            E::Definition(m) => Self::InvalidDefinition(m),
            E::UnknownTag(_)
            | E::UnknownVersion(..)
            | E::UnknownAudience(_)
            | E::UnknownProfile(_) => Self::NotFound(e.to_string()),
            E::Conflict(m) => Self::Conflict(m),
            E::Invalid(m) => Self::BadRequest(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<portrait_store::StoreError> for ApiError {
    fn from(e: portrait_store::StoreError) -> Self {
        use portrait_core::profile::ProfileError;
        use portrait_store::StoreError as E;
        match e {
            E::Busy => Self::Busy,
            E::Source(m) if m.contains("already") => Self::Conflict(m),
            E::Source(m) => Self::BadRequest(m),
            E::Profile(p) => match p {
                ProfileError::NoProfile(_) => Self::NotFound(p.to_string()),
                // Name the type only: the value is personal.
                ProfileError::NotLinked {
                    profile,
                    identifier,
                } => Self::BadRequest(format!(
                    "that {} is not linked to profile {profile}",
                    identifier.split_once(':').map_or("identifier", |(k, _)| k)
                )),
                other => Self::BadRequest(other.to_string()),
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<portrait_store::retention::PolicyError> for ApiError {
    fn from(e: portrait_store::retention::PolicyError) -> Self {
        use portrait_store::retention::PolicyError as E;
        match e {
            E::Parse(_) | E::Invalid { .. } => Self::BadRequest(e.to_string()),
            E::Io { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::retention::RetentionError> for ApiError {
    fn from(e: crate::retention::RetentionError) -> Self {
        use crate::retention::RetentionError as E;
        match e {
            E::Policy(p) => p.into(),
            E::Store(s) => s.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::access::AccessError> for ApiError {
    fn from(e: crate::access::AccessError) -> Self {
        use crate::access::AccessError as E;
        match e {
            E::UnknownRole(_) | E::BadName(_) => Self::BadRequest(e.to_string()),
            E::NameTaken(_) => Self::Conflict(e.to_string()),
            E::NoToken(_) => Self::NotFound(e.to_string()),
            E::Corrupt { .. } | E::Io { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code();
        let mut body = json!({"code": code, "message": self.to_string()});
        match &self {
            Self::InvalidMessage { index, field, .. } => {
                body["index"] = json!(index);
                body["field"] = json!(field);
            }
            Self::TooLarge {
                index: Some(index), ..
            } => body["index"] = json!(index),
            _ => {}
        }
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, Self::Busy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_engine_is_429_with_retry_after() {
        let response = ApiError::from(portrait_store::StoreError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
