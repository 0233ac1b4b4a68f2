//! Portrait's HTTP edge: the Segment-compatible ingest API (`/v1/...`, write keys) and the
//! admin API (`/api/v1/...`, bearer token). Handlers translate HTTP to engine calls; every
//! error goes through the one table in [`error`].

pub mod admin;
pub mod error;
pub mod imports;
pub mod ingest;

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use portrait_store::Engine;

pub use error::ApiError;
pub use ingest::Limits;

/// Shared state of the HTTP handlers.
pub struct App {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Ingest size limits.
    pub limits: Limits,
    /// The admin bearer token.
    pub admin_token: String,
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
    let token = format!("pat_{:032x}", rand::random::<u128>());
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

async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.map(str::trim) != Some(app.admin_token.as_str()) {
        use axum::response::IntoResponse;
        return ApiError::Unauthorized(
            "the admin API needs `Authorization: Bearer <admin token>`".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// The full router.
pub fn router(app: Arc<App>) -> Router {
    let admin = Router::new()
        .route("/stats", get(admin::stats))
        .route("/sources", get(admin::list_sources).post(admin::add_source))
        .route("/sources/{name}", patch(admin::patch_source))
        .route("/sources/{name}/keys", post(admin::add_key))
        .route(
            "/sources/{name}/import",
            post(admin::import).layer(axum::extract::DefaultBodyLimit::max(1 << 30)),
        )
        .route("/profiles/{id}", get(admin::profile))
        .route("/profiles/{id}/events", get(admin::events))
        .route("/profiles/{id}/merges", get(admin::merges))
        .route("/profiles/{id}/unmerge", post(admin::unmerge))
        .route(
            "/profiles/by-identifier/{kind}/{value}",
            get(admin::by_identifier),
        )
        .layer(middleware::from_fn_with_state(app.clone(), require_admin));
    Router::new()
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/import", post(ingest::batch))
        .route("/v1/{kind}", post(ingest::single))
        .route("/health", get(|| async { "ok" }))
        .nest("/api/v1", admin)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(app)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}
