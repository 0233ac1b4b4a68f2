//! The one table of the admin API: every `/api/v1` route with its method, the lowest role that
//! may call it, the kind of data it answers and its handler.
//!
//! The router, the permission check and the OpenAPI document are all built from [`ROUTES`], so
//! a route cannot exist without a declared permission, and the document cannot disagree with
//! the server. The check ([`guard`]) answers 401 for a missing or unknown token (a write key is
//! not a token) and 403 `forbidden` for a known token below the route's role; it then records
//! the request in the audit log, allowed or not.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::access::{Caller, Role};
use crate::audit::{AuditEntry, PiiRead};
use crate::error::ApiError;
use crate::{admin, history, realtime, tagging, App};

/// An HTTP method of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Method {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Patch => MethodFilter::PATCH,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// What a route answers, for masking and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Nothing about members: configuration, tokens, the audit log, the API description.
    Config,
    /// Counts over all members.
    Aggregates,
    /// Member-level data (profiles, timelines, identity decisions). Personal information is
    /// masked for every role below admin; a successful read is flagged in the audit log.
    Members,
    /// Writes member data (imports, unmerges); the answer may show some (the profiles an
    /// unmerge made, an import's reject reasons), masked below admin like [`Data::Members`].
    Writes,
}

impl Data {
    /// Whether answers carry member-level data (flagged `pii` in the audit log).
    pub fn carries_members(self) -> bool {
        matches!(self, Data::Members | Data::Writes)
    }

    /// Name used in the OpenAPI document (`x-portrait-data`).
    pub fn as_str(self) -> &'static str {
        match self {
            Data::Config => "config",
            Data::Aggregates => "aggregates",
            Data::Members => "members",
            Data::Writes => "writes",
        }
    }
}

/// One admin route.
pub struct Route {
    /// Method.
    pub method: Method,
    /// Path template, axum syntax (`/api/v1/profiles/{id}`).
    pub path: &'static str,
    /// The lowest role allowed.
    pub role: Role,
    /// What the route answers.
    pub data: Data,
    /// One-line description.
    pub summary: &'static str,
    /// Path parameters that hold personal values: recorded as `***` in the audit log.
    pub hidden_params: &'static [&'static str],
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// Content type of the request body, if the route takes one.
    pub body: Option<&'static str>,
    /// Status of a success.
    pub ok: u16,
    handler: fn(MethodFilter) -> MethodRouter<Arc<App>>,
}

const JSON: Option<&str> = Some("application/json");

/// Every `/api/v1` route. Keep docs/access.md in step.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/api/v1/openapi.json",
        role: Role::Analyst,
        data: Data::Config,
        summary: "This API's OpenAPI document, with the role each route needs",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::openapi),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/stats",
        role: Role::Analyst,
        data: Data::Aggregates,
        summary: "Counters: profiles, identifiers, merges, events per source",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::stats),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/sources",
        role: Role::Operator,
        data: Data::Config,
        summary: "Sources; write keys are shown to admins only",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::list_sources),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/sources",
        role: Role::Admin,
        data: Data::Config,
        summary: "Add a source `{name, kind, write_key?}`; answers its write key",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 201,
        handler: |m| on(m, admin::add_source),
    },
    Route {
        method: Method::Patch,
        path: "/api/v1/sources/{name}",
        role: Role::Admin,
        data: Data::Config,
        summary: "Set a source's trait priority `{priority}`",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, admin::patch_source),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/sources/{name}/keys",
        role: Role::Admin,
        data: Data::Config,
        summary: "Add a write key to a source",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 201,
        handler: |m| on(m, admin::add_key),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/sources/{name}/import",
        role: Role::Operator,
        data: Data::Writes,
        summary: "Import a file: multipart with a `mapping` part (YAML) and a `file` part",
        hidden_params: &[],
        query: &[],
        body: Some("multipart/form-data"),
        ok: 200,
        handler: |m| on(m, admin::import).layer(DefaultBodyLimit::max(1 << 30)),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/profiles/{id}",
        role: Role::Operator,
        data: Data::Members,
        summary: "A profile (a merged-away id answers with its survivor)",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::profile),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/profiles/by-identifier/{type}/{value}",
        role: Role::Operator,
        data: Data::Members,
        summary: "The profile holding an identifier",
        hidden_params: &["value"],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::by_identifier),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/profiles/{id}/events",
        role: Role::Operator,
        data: Data::Members,
        summary: "A profile's timeline, newest first",
        hidden_params: &[],
        query: &[
            ("limit", "page size (default 50, at most 1000)"),
            ("cursor", "the previous page's `next`"),
        ],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::events),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/profiles/{id}/merges",
        role: Role::Operator,
        data: Data::Members,
        summary: "A profile's identity decisions (links, merges, unmerges)",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::merges),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/profiles/{id}/unmerge",
        role: Role::Admin,
        data: Data::Writes,
        summary: "Split a profile by unlinking an identifier `{type, value}`",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, admin::unmerge),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/profiles/{id}/consent",
        role: Role::Operator,
        data: Data::Writes,
        summary: "Record a consent decision `{channel, purpose?, state, evidence?}` as a Consent Updated event",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, admin::set_consent),
    },
    Route {
        method: Method::Delete,
        path: "/api/v1/profiles/{id}",
        role: Role::Admin,
        data: Data::Writes,
        summary: "Erase a person from every store (log, profile, identity links, lake, reject files); their identifiers are suppressed",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::erase_profile),
    },
    Route {
        method: Method::Delete,
        path: "/api/v1/profiles/by-identifier/{type}/{value}",
        role: Role::Admin,
        data: Data::Writes,
        summary: "Erase the person holding an identifier",
        hidden_params: &["value"],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::erase_by_identifier),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/erasures",
        role: Role::Admin,
        data: Data::Writes,
        summary: "Erase many people: JSON `{identifiers: [{type, value}], profiles: [id]}`, or a file of `type:value` lines",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::erase_bulk),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/erasures",
        role: Role::Admin,
        data: Data::Config,
        summary: "Erasure requests and their status (no personal data), newest first",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::list),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/erasures/{id}",
        role: Role::Admin,
        data: Data::Config,
        summary: "One erasure request's status",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::get),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/keys/rotate",
        role: Role::Admin,
        data: Data::Config,
        summary: "Start a new data key and re-encrypt every record in place (reads continue)",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::erasure::http::rotate),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/retention",
        role: Role::Admin,
        data: Data::Config,
        summary: "The retention policy (periods per event, source or type), the published tags that read further back than it keeps, and the last run",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, crate::retention::http::get),
    },
    Route {
        method: Method::Put,
        path: "/api/v1/retention",
        role: Role::Admin,
        data: Data::Config,
        summary: "Replace the retention policy `{rules: [{event?, source?, type?, days}]}` (JSON or YAML); an invalid rule is a 400",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, crate::retention::http::put),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/retention/apply",
        role: Role::Admin,
        data: Data::Writes,
        summary: "Expire the events past their retention period `{as_of?}`: content removed from the log and the lake, identity kept; counts per rule",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, crate::retention::http::apply),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/tags",
        role: Role::Analyst,
        data: Data::Config,
        summary: "Tags in the catalog: state, versions, lineage, last computed, last used",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::list),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/tags",
        role: Role::Operator,
        data: Data::Config,
        summary: "Apply YAML tag definitions (each changed tag gets a new draft version)",
        hidden_params: &[],
        query: &[("publish", "publish the new versions at once")],
        body: Some("application/yaml"),
        ok: 200,
        handler: |m| on(m, tagging::apply),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/tags/{name}",
        role: Role::Analyst,
        data: Data::Config,
        summary: "One tag with every version and its lineage",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::show),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/tags/{name}/impact",
        role: Role::Operator,
        data: Data::Aggregates,
        summary: "How many profiles would gain and lose the tag if a version were published",
        hidden_params: &[],
        query: &[("version", "the version (default the latest)")],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::impact),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/tags/{name}/publish",
        role: Role::Operator,
        data: Data::Config,
        summary: "Publish a version (default the latest)",
        hidden_params: &[],
        query: &[("version", "the version (default the latest)")],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::publish),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/tags/{name}/archive",
        role: Role::Operator,
        data: Data::Config,
        summary: "Archive a tag (refused while a published tag or audience uses it)",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::archive),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/tags/{name}/distribution",
        role: Role::Analyst,
        data: Data::Aggregates,
        summary: "Counts per value of a computed tag",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::distribution),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/tags/{name}/sql",
        role: Role::Analyst,
        data: Data::Config,
        summary: "The tag's compiled plan and fused SQL",
        hidden_params: &[],
        query: &[("dialect", "datafusion (default), duckdb, clickhouse")],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::plan_sql),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/compute",
        role: Role::Operator,
        data: Data::Aggregates,
        summary: "Compute tags now `{as_of?, tags?, engine?}` (compacts new events first)",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, tagging::compute),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/profiles/{id}/tags/{name}/explain",
        role: Role::Operator,
        data: Data::Members,
        summary: "Why a profile has a tag value: the aggregates and conditions, evaluated",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::explain_profile),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/audiences/preview",
        role: Role::Analyst,
        data: Data::Aggregates,
        summary: "Count the members of an audience expression `{expression, sample?}` (a sample of ids for operators)",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 200,
        handler: |m| on(m, tagging::preview),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/audiences",
        role: Role::Analyst,
        data: Data::Config,
        summary: "Saved audiences with their size over time",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::audiences),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/audiences",
        role: Role::Operator,
        data: Data::Config,
        summary: "Save an audience `{name, expression, title?, owner?, description?}`",
        hidden_params: &[],
        query: &[("draft", "true: save as a draft (default: published at once)")],
        body: JSON,
        ok: 200,
        handler: |m| on(m, tagging::save),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/audiences/{name}",
        role: Role::Analyst,
        data: Data::Config,
        summary: "One saved audience",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::audience),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/audiences/{name}/export",
        role: Role::Admin,
        data: Data::Members,
        summary: "Export members with one identifier each (consent checked per channel); skipped counts in X-Portrait-Skipped-* headers",
        hidden_params: &[],
        query: &[("identifier", "identifier type per member"), ("scope", "scope prefix (WeChat app id)"), ("channel", "consent channel (default from the identifier type)"), ("purpose", "consent purpose (default marketing)"), ("consent", "false: no consent check"), ("format", "csv (default) or jsonl")],
        body: None,
        ok: 200,
        handler: |m| on(m, tagging::export),
    },
    Route { method: Method::Get, path: "/api/v1/history", role: Role::Analyst, data: Data::Aggregates,
        summary: "Tags with history: dates, retention, storage", hidden_params: &[], query: &[], body: None, ok: 200,
        handler: |m| on(m, history::list) },
    Route { method: Method::Get, path: "/api/v1/history/{tag}/transitions", role: Role::Analyst, data: Data::Aggregates,
        summary: "From × to counts of a stage/bool tag between two dates (Sankey data)", hidden_params: &[],
        query: &[("from", "date or RFC 3339 instant"), ("to", "date or RFC 3339 instant"), ("audience", "a saved audience (current members)")],
        body: None, ok: 200, handler: |m| on(m, history::transitions) },
    Route { method: Method::Get, path: "/api/v1/history/{tag}/change", role: Role::Analyst, data: Data::Aggregates,
        summary: "Entered / exited / stayed for one value between two dates", hidden_params: &[],
        query: &[("value", "the value (default: any)"), ("from", "date"), ("to", "date"), ("audience", "a saved audience")],
        body: None, ok: 200, handler: |m| on(m, history::change) },
    Route { method: Method::Get, path: "/api/v1/history/{tag}/population", role: Role::Analyst, data: Data::Aggregates,
        summary: "Profiles per value at every snapshot date in a range", hidden_params: &[],
        query: &[("from", "date"), ("to", "date"), ("audience", "a saved audience")],
        body: None, ok: 200, handler: |m| on(m, history::population) },
    Route { method: Method::Get, path: "/api/v1/history/{tag}/paths", role: Role::Analyst, data: Data::Aggregates,
        summary: "Most common value sequences over snapshot dates", hidden_params: &[],
        query: &[("from", "date"), ("to", "date"), ("every", "1d, 1w, 1mo (default: every snapshot date)"), ("collapse", "merge repeats (default true)"), ("limit", "default 20"), ("audience", "a saved audience")],
        body: None, ok: 200, handler: |m| on(m, history::paths) },
    Route { method: Method::Get, path: "/api/v1/changes", role: Role::Operator, data: Data::Members,
        summary: "The change stream of tag values and audience memberships after a cursor (long poll with `wait`; server-sent events with `Accept: text/event-stream`)", hidden_params: &[],
        query: &[("since", "cursor; 0 = the oldest retained change"), ("limit", "default 1000, at most 10000"), ("wait", "ms to wait for a change when there is none (at most 60000)"), ("names", "only these tag or audience names, comma-separated"), ("kind", "only tag or audience changes")],
        body: None, ok: 200, handler: |m| on(m, realtime::changes) },
    Route { method: Method::Get, path: "/api/v1/realtime", role: Role::Analyst, data: Data::Aggregates,
        summary: "The real-time engine: tags and audiences maintained, counters, stream cursors, visibility lag per event (store hand-over → change readable, and → values in the profile API: p50/p99/p999)", hidden_params: &[], query: &[],
        body: None, ok: 200, handler: |m| on(m, realtime::status) },
    Route { method: Method::Post, path: "/api/v1/realtime/visibility/reset", role: Role::Operator, data: Data::Aggregates,
        summary: "Start a new visibility-lag window; returns the summary of the one it ends", hidden_params: &[], query: &[],
        body: None, ok: 200, handler: |m| on(m, realtime::reset_visibility) },
    Route { method: Method::Get, path: "/api/v1/webhooks", role: Role::Admin, data: Data::Config,
        summary: "Webhooks receiving the change stream, with their cursors and failures", hidden_params: &[], query: &[],
        body: None, ok: 200, handler: |m| on(m, realtime::list_webhooks) },
    Route { method: Method::Post, path: "/api/v1/webhooks", role: Role::Admin, data: Data::Config,
        summary: "Add a webhook `{url, secret?, kinds?, names?, since?}`", hidden_params: &[], query: &[],
        body: JSON, ok: 201, handler: |m| on(m, realtime::add_webhook) },
    Route { method: Method::Delete, path: "/api/v1/webhooks/{id}", role: Role::Admin, data: Data::Config,
        summary: "Remove a webhook", hidden_params: &[], query: &[],
        body: None, ok: 200, handler: |m| on(m, realtime::remove_webhook) },
    Route { method: Method::Get, path: "/api/v1/profiles/{id}/history", role: Role::Operator, data: Data::Members,
        summary: "A profile's tag changes over time (cause: initial/refresh)", hidden_params: &[],
        query: &[("tags", "comma-separated"), ("from", "date"), ("to", "date")],
        body: None, ok: 200, handler: |m| on(m, history::profile_trail) },
    Route {
        method: Method::Get,
        path: "/api/v1/tokens",
        role: Role::Admin,
        data: Data::Config,
        summary: "API tokens: names, roles, creation times (never the secrets)",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::list_tokens),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/tokens",
        role: Role::Admin,
        data: Data::Config,
        summary: "Create a token `{role, name?}`; the answer is the only time it is shown",
        hidden_params: &[],
        query: &[],
        body: JSON,
        ok: 201,
        handler: |m| on(m, admin::add_token),
    },
    Route {
        method: Method::Delete,
        path: "/api/v1/tokens/{name}",
        role: Role::Admin,
        data: Data::Config,
        summary: "Revoke a token",
        hidden_params: &[],
        query: &[],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::delete_token),
    },
    Route {
        method: Method::Get,
        path: "/api/v1/audit",
        role: Role::Admin,
        data: Data::Config,
        summary: "The audit log, newest first",
        hidden_params: &[],
        query: &[
            ("limit", "entries (default 100, at most 10000)"),
            ("since", "only entries at or after this ISO-8601 instant"),
        ],
        body: None,
        ok: 200,
        handler: |m| on(m, admin::audit),
    },
];

/// The admin API router: every route of [`ROUTES`] behind [`guard`].
pub fn admin_router(app: &Arc<App>) -> Router<Arc<App>> {
    ROUTES.iter().fold(Router::new(), |router, route| {
        let guard_state = Guard {
            app: app.clone(),
            route,
        };
        let method_router = (route.handler)(route.method.filter())
            .route_layer(middleware::from_fn_with_state(guard_state, guard));
        router.route(route.path, method_router)
    })
}

/// State of the check of one route.
#[derive(Clone)]
pub struct Guard {
    app: Arc<App>,
    route: &'static Route,
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

/// Who the bearer token of `req` is: 401 when missing or unknown (a write key says so).
fn authenticate(app: &App, req: &Request) -> Result<Caller, ApiError> {
    let token = bearer(req).ok_or_else(|| {
        ApiError::Unauthorized("the admin API needs `Authorization: Bearer <token>`".into())
    })?;
    if let Some(caller) = app.access.authenticate(token) {
        return Ok(caller);
    }
    Err(ApiError::Unauthorized(
        if app.engine.sources().by_key(token).is_some() {
            "a write key only works on the ingest API (/v1/...); the admin API needs an API token"
        } else {
            "unknown token"
        }
        .into(),
    ))
}

/// Authenticates, authorises and audits one request to `guard.route`. Handlers get the
/// [`Caller`] as a request extension.
pub async fn guard(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let Guard { app, route } = guard;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let path = crate::audit::recorded_path(route.path, req.uri().path(), route.hidden_params);
    let (caller, response) = match authenticate(&app, &req) {
        Err(e) => (None, e.into_response()),
        Ok(c) if c.role < route.role => {
            let refusal = ApiError::Forbidden(format!(
                "{} {} needs the `{}` role; token `{}` has `{}`",
                route.method.as_str(),
                route.path,
                route.role,
                c.name,
                c.role
            ));
            (Some(c), refusal.into_response())
        }
        Ok(c) => {
            req.extensions_mut().insert(c.clone());
            (Some(c), next.run(req).await)
        }
    };
    let status = response.status();
    let pii = match &caller {
        Some(c) if route.data.carries_members() && status.is_success() => {
            Some(if c.sees_clear_pii() {
                PiiRead::Clear
            } else {
                PiiRead::Masked
            })
        }
        _ => None,
    };
    app.audit.record(&AuditEntry {
        at: portrait_core::time::format_iso(portrait_core::time::now()),
        token: caller.as_ref().map(|c| c.name.clone()),
        role: caller.as_ref().map(|c| c.role),
        method: route.method.as_str().into(),
        path,
        status: status.as_u16(),
        peer,
        pii,
    });
    response
}
