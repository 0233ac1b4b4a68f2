//! Portrait's HTTP edge: the Segment-compatible ingest API (`/v1/...`, write keys) and the
//! admin API (`/api/v1/...`, API tokens with roles). Handlers translate HTTP to engine calls;
//! every error goes through the one table in [`error`]; every admin route, its permission and
//! its documentation come from the one table in [`routes`].

pub mod access;
pub mod admin;
pub mod audit;
pub mod erasure;
pub mod error;
pub mod history;
pub mod imports;
pub mod ingest;
pub mod openapi;
pub mod realtime;
pub mod retention;
pub mod routes;
pub mod tagging;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use portrait_store::Engine;

pub use access::{AccessError, Caller, Role};
pub use error::ApiError;
pub use ingest::Limits;

/// Shared state of the HTTP handlers.
pub struct App {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Ingest size limits.
    pub limits: Limits,
    /// The admin token and `DIR/tokens.json`.
    pub access: access::Access,
    /// `DIR/audit.jsonl`.
    pub audit: audit::AuditLog,
    /// The OpenAPI document, serialised once.
    pub openapi: String,
    /// The tag service (catalog, tag store, audiences).
    pub tagging: Arc<portrait_tagging::service::Tagging>,
    /// The real-time engine and webhooks (`None` only when it failed to start; see the log).
    pub realtime: Option<realtime::Live>,
}

impl App {
    /// The state of a server on `engine`'s data directory: loads `DIR/tokens.json` (refusing a
    /// file with unknown roles) and opens `DIR/audit.jsonl`.
    pub fn new(
        engine: Arc<Engine>,
        tagging: Arc<portrait_tagging::service::Tagging>,
        limits: Limits,
        admin_token: &str,
    ) -> Result<Self, AccessError> {
        let dir = engine.dir().to_path_buf();
        let access = access::Access::open(&dir, admin_token)?;
        let audit = audit::AuditLog::open(&dir).map_err(|source| AccessError::Io {
            path: dir.join("audit.jsonl"),
            source,
        })?;
        let live = match realtime::start(&engine, &tagging) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "the real-time engine did not start");
                None
            }
        };
        Ok(Self {
            engine,
            limits,
            access,
            audit,
            openapi: openapi::document_json(),
            tagging,
            realtime: live,
        })
    }
}

/// Resolves the admin token: `PORTRAIT_ADMIN_TOKEN` if given, else `DIR/admin_token`, else a
/// new one written there with mode 0600. Returns the token and whether it was just created.
pub fn admin_token(dir: &Path, from_env: Option<String>) -> std::io::Result<(String, bool)> {
    if let Some(t) = from_env.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_string(), false));
    }
    let path = dir.join("admin_token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = access::new_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok((token, true))
}

/// The full router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/import", post(ingest::batch))
        .route("/v1/{kind}", post(ingest::single))
        .route("/health", get(|| async { "ok" }))
        .merge(routes::admin_router(&app))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(app)
}

/// Serves until `shutdown` resolves. Handlers see the peer address (`ConnectInfo<SocketAddr>`),
/// which the audit log records.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
