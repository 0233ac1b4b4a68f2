//! The OpenAPI 3.1 document served at `GET /api/v1/openapi.json`, built with utoipa's builders
//! from the route table ([`crate::routes::ROUTES`]) and the list of ingest routes, so it lists
//! exactly the routes the server has. Each operation carries `x-portrait-role` (the lowest role
//! allowed, `write_key` for the ingest API, `none` for `/health`) and, for the admin API,
//! `x-portrait-data` (what it answers: `config`, `aggregates`, `members`, `writes`).

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Components, ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Required};

use crate::routes::{Method, Route, ROUTES};

/// The Segment-compatible ingest routes: path and summary. `/v1/{type}` serves the six types.
pub const INGEST_ROUTES: &[(&str, &str)] = &[
    (
        "/v1/batch",
        "A batch of messages `{batch: [...], context?, sentAt?}`",
    ),
    (
        "/v1/import",
        "Same as /v1/batch (Segment's historical import)",
    ),
    ("/v1/identify", "One identify message"),
    ("/v1/track", "One track message"),
    ("/v1/page", "One page message"),
    ("/v1/screen", "One screen message"),
    ("/v1/group", "One group message"),
    ("/v1/alias", "One alias message"),
];

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Patch => HttpMethod::Patch,
        Method::Put => HttpMethod::Put,
        Method::Delete => HttpMethod::Delete,
    }
}

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn path_schema(name: &str) -> ObjectBuilder {
    match name {
        "id" => ObjectBuilder::new().schema_type(Type::Integer),
        _ => string_schema(),
    }
}

fn json_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(ObjectBuilder::new())))
}

fn error(description: &str) -> ResponseBuilder {
    json_response(&format!("{description}: `{{code, message}}`"))
}

fn extensions(pairs: &[(&str, &str)]) -> Extensions {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

fn admin_operation(route: &Route) -> Operation {
    let params = route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')));
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!(
            "{}{}",
            route.method.as_str().to_lowercase(),
            route
                .path
                .replace(['{', '}'], "")
                .replace(['/', '.', '-'], "_")
        )))
        .tag("admin")
        .summary(Some(route.summary))
        .description(Some(format!(
            "Required role: `{}` or higher (analyst < operator < admin). Data: `{}`.",
            route.role,
            route.data.as_str()
        )))
        .security(SecurityRequirement::new("token", Vec::<String>::new()))
        .response(route.ok.to_string(), json_response("Success"))
        .response(
            "401",
            error("Missing or unknown token (write keys are not tokens)"),
        )
        .response(
            "403",
            error("The token's role is below the required role (`forbidden`)"),
        )
        .extensions(Some(extensions(&[
            ("x-portrait-role", route.role.as_str()),
            ("x-portrait-data", route.data.as_str()),
        ])));
    for name in params {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(path_schema(name))),
        );
    }
    for (name, description) in route.query {
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(string_schema())),
        );
    }
    if let Some(content_type) = route.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(content_type, Content::new(Some(ObjectBuilder::new())))
                .build(),
        ));
    }
    op.build()
}

fn ingest_operation(summary: &str) -> Operation {
    OperationBuilder::new()
        .tag("ingest")
        .summary(Some(summary))
        .description(Some(
            "Segment-compatible. Authenticated by a source's write key: HTTP Basic with the key as \
             user name, or `writeKey` in the body. API tokens are not accepted.",
        ))
        .security(SecurityRequirement::new("writeKey", Vec::<String>::new()))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", Content::new(Some(ObjectBuilder::new())))
                .build(),
        ))
        .response("200", json_response("Stored (fsynced): `{success, accepted, duplicates}`"))
        .response("400", error("Invalid; nothing of the request was stored"))
        .response("401", error("Missing or unknown write key"))
        .response("413", error("Body or message too large"))
        .response("429", error("Busy; retry after Retry-After"))
        .extensions(Some(extensions(&[("x-portrait-role", "write_key")])))
        .build()
}

/// Builds the document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for route in ROUTES {
        paths.add_path_operation(
            route.path,
            vec![http_method(route.method)],
            admin_operation(route),
        );
    }
    for (path, summary) in INGEST_ROUTES {
        paths.add_path_operation(path, vec![HttpMethod::Post], ingest_operation(summary));
    }
    paths.add_path_operation(
        "/health",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .summary(Some("Liveness: `ok`"))
            .response("200", ResponseBuilder::new().description("ok"))
            .extensions(Some(extensions(&[("x-portrait-role", "none")])))
            .build(),
    );
    let mut components = Components::new();
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: the admin token or one from `portrait token add` / POST /api/v1/tokens",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "writeKey",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("A source's write key as the user name, no password"))
                .build(),
        ),
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Portrait")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Portrait's HTTP API. The admin API (/api/v1) needs an API token whose role \
                     is at least the operation's `x-portrait-role` (analyst < operator < admin); \
                     see docs/access.md. The ingest API (/v1) takes write keys.",
                )),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// The document as JSON text.
pub fn document_json() -> String {
    // Serialising in-memory maps with string keys cannot fail; answer the reason if it does.
    serde_json::to_string(&document())
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_role() {
        let doc = serde_json::to_value(document()).expect("serialises");
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            assert_eq!(op["x-portrait-role"], route.role.as_str(), "{}", route.path);
        }
        assert_eq!(
            doc["paths"]["/v1/batch"]["post"]["x-portrait-role"],
            "write_key"
        );
        assert_eq!(
            doc["paths"]["/api/v1/profiles/by-identifier/{type}/{value}"]["get"]["parameters"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }
}
