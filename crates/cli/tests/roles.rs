//! Roles, permissions, masking and the audit log, end to end against `portrait serve`: the
//! OpenAPI document drives a walk over every admin route for every kind of caller, so a route
//! added without its permission row, or a check that disagrees with the document, fails here.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{add_source, portrait, Server, TOKEN};
use serde_json::{json, Value};

const KEY: &str = "roles-write-key";
const PHONE: &str = "13800001234";
const EMAIL: &str = "li.lei@example.com";
const NAME: &str = "韩梅梅";

/// `portrait token add`; returns the printed token.
fn token_add(data: &Path, role: &str, name: &str) -> String {
    let d = data.to_str().expect("utf-8");
    let (ok, out, err) = portrait(&["token", "add", "--data", d, "--role", role, "--name", name]);
    assert!(ok, "token add failed: {err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("pat_"), "{out}");
    token
}

struct Setup {
    dir: tempfile::TempDir,
    server: Server,
    operator: String,
    analyst: String,
    profile: u64,
}

/// A server with an operator and an analyst token and one profile full of personal data; the
/// server's stderr goes to `DIR/../stderr.log`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "app", "app", KEY);
    let operator = token_add(&data, "operator", "ops");
    let analyst = token_add(&data, "analyst", "bi");
    let server = Server::start_with_stderr(&data, &[], Some(&dir.path().join("stderr.log")));
    let batch = json!({"batch": [
        {"type": "identify", "anonymousId": "dev-9", "messageId": "m1", "timestamp": "2024-06-01T00:00:00Z",
         "traits": {"phone": PHONE, "level": "gold"}},
        {"type": "identify", "userId": "u-1", "anonymousId": "dev-9", "messageId": "m2",
         "timestamp": "2024-06-02T00:00:00Z", "traits": {"name": NAME, "email": EMAIL}},
        {"type": "track", "userId": "u-1", "messageId": "m3", "event": "Order Completed",
         "timestamp": "2024-06-03T00:00:00Z",
         "properties": {"revenue": 99.5, "receiver_phone": PHONE},
         "context": {"traits": {"email": EMAIL}}}
    ]});
    let r = server.ingest("/v1/batch", KEY, &batch.to_string());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let p = server.admin_get("/api/v1/profiles/by-identifier/user_id/u-1");
    assert_eq!(p.status, 200);
    let profile = p.json()["id"].as_u64().expect("id");
    Setup {
        dir,
        server,
        operator,
        analyst,
        profile,
    }
}

/// A value for a path parameter of `path`.
fn sample(path: &str, param: &str, profile: u64) -> String {
    match param {
        "id" => profile.to_string(),
        "type" => "phone".into(),
        "value" => PHONE.into(),
        "name" if path.starts_with("/api/v1/tokens/") => "no-such-token".into(),
        "name" => "app".into(),
        "tag" => "lifecycle".into(),
        other => panic!("no sample for path parameter `{other}` of {path}: add one"),
    }
}

fn rank(role: &str) -> u8 {
    match role {
        "analyst" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("unknown role `{other}` in the OpenAPI document"),
    }
}

#[test]
fn every_documented_route_answers_401_and_403_exactly_as_its_role_says() {
    let s = setup();
    let doc = s.server.get_as(&s.analyst, "/api/v1/openapi.json");
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    let paths = doc["paths"].as_object().expect("paths");
    for ingest in [
        "/v1/batch",
        "/v1/import",
        "/v1/identify",
        "/v1/track",
        "/v1/alias",
    ] {
        assert_eq!(
            paths[ingest]["post"]["x-portrait-role"], "write_key",
            "{ingest} is documented"
        );
    }
    let callers: [(&str, Option<&str>, Option<u8>); 6] = [
        ("admin", Some(TOKEN), Some(3)),
        ("operator", Some(&s.operator), Some(2)),
        ("analyst", Some(&s.analyst), Some(1)),
        ("no token", None, None),
        (
            "wrong token",
            Some("pat_00000000000000000000000000000000"),
            None,
        ),
        ("write key as bearer", Some(KEY), None),
    ];
    let mut walked = BTreeSet::new();
    for (template, item) in paths.iter().filter(|(p, _)| p.starts_with("/api/v1/")) {
        let path = template
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(param) => sample(template, param, s.profile),
                    None => seg.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().expect("path item") {
            let required = op["x-portrait-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {template} has no x-portrait-role"));
            let needed = rank(required);
            let method = method.to_uppercase();
            let body: &[u8] = if method == "GET" || method == "DELETE" {
                b""
            } else {
                b"{}"
            };
            for (who, token, role) in &callers {
                let r = s.server.request_as(*token, &method, &path, body);
                let what = format!(
                    "{method} {path} as {who} (needs {required}): {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                match role {
                    None => assert_eq!(r.status, 401, "{what}"),
                    Some(rank) if *rank < needed => {
                        assert_eq!(r.status, 403, "{what}");
                        assert_eq!(r.json()["code"], "forbidden", "{what}");
                    }
                    Some(_) => assert!(![401, 403].contains(&r.status), "{what}"),
                }
                if let Some(t) = token {
                    assert!(
                        !String::from_utf8_lossy(&r.body).contains(t),
                        "the answer echoes the token: {what}"
                    );
                }
            }
            walked.insert(format!("{method} {template}"));
        }
    }
    for must in [
        "GET /api/v1/stats",
        "GET /api/v1/profiles/{id}",
        "GET /api/v1/profiles/by-identifier/{type}/{value}",
        "GET /api/v1/profiles/{id}/events",
        "POST /api/v1/sources/{name}/import",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{name}",
        "GET /api/v1/audit",
        "GET /api/v1/openapi.json",
        "POST /api/v1/tags",
        "POST /api/v1/compute",
        "POST /api/v1/audiences/preview",
        "GET /api/v1/audiences/{name}/export",
        "GET /api/v1/history/{tag}/transitions",
        "POST /api/v1/profiles/{id}/consent",
        "PUT /api/v1/retention",
        "POST /api/v1/retention/apply",
    ] {
        assert!(
            walked.contains(must),
            "{must} missing from the document: {walked:?}"
        );
    }
}

#[test]
fn operator_sees_masked_personal_data_admin_in_clear_analyst_only_counts() {
    let s = setup();
    let (server, id) = (&s.server, s.profile);
    let by_phone = format!("/api/v1/profiles/by-identifier/phone/{PHONE}");
    for path in [
        format!("/api/v1/profiles/{id}"),
        by_phone.clone(),
        format!("/api/v1/profiles/{id}/events"),
        format!("/api/v1/profiles/{id}/merges"),
    ] {
        let masked = server.get_as(&s.operator, &path);
        assert_eq!(masked.status, 200, "{path}");
        let text = String::from_utf8_lossy(&masked.body).to_string();
        for secret in [PHONE, EMAIL, NAME] {
            assert!(
                !text.contains(secret),
                "operator sees {secret} at {path}: {text}"
            );
        }
        let clear = server.get_as(TOKEN, &path);
        let clear_text = String::from_utf8_lossy(&clear.body);
        assert!(
            clear_text.contains(PHONE) || clear_text.contains(EMAIL),
            "admin sees personal data in clear at {path}: {clear_text}"
        );
    }
    let p = server.get_as(&s.operator, &by_phone).json();
    assert_eq!(p["id"], id);
    let ids: Vec<(String, String)> = p["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap_or("").into(),
                i["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        ids.contains(&("phone".into(), "138****1234".into())),
        "{ids:?}"
    );
    assert!(
        ids.contains(&("email".into(), "l***@example.com".into())),
        "{ids:?}"
    );
    assert!(ids.contains(&("user_id".into(), "u-1".into())), "{ids:?}");
    assert_eq!(p["traits"]["name"]["value"], "韩***");
    assert_eq!(p["traits"]["phone"]["value"], "138****1234");
    assert_eq!(p["traits"]["email"]["value"], "l***@example.com");
    assert_eq!(p["traits"]["level"]["value"], "gold", "other traits stay");
    let clear = server.get_as(TOKEN, &by_phone).json();
    assert_eq!(clear["traits"]["name"]["value"], NAME);
    assert_eq!(clear["traits"]["email"]["value"], EMAIL);

    let events = server
        .get_as(&s.operator, &format!("/api/v1/profiles/{id}/events"))
        .json();
    let order = &events["events"][0];
    assert_eq!(order["event"], "Order Completed");
    assert_eq!(order["properties"]["receiver_phone"], "138****1234");
    assert_eq!(order["properties"]["revenue"], 99.5);
    assert_eq!(order["context"]["traits"]["email"], "l***@example.com");

    // Write keys are for admins.
    let sources = server.get_as(&s.operator, "/api/v1/sources").json();
    assert_eq!(sources["sources"][0]["name"], "app");
    assert!(
        sources["sources"][0].get("write_keys").is_none(),
        "{sources}"
    );
    assert!(!sources.to_string().contains(KEY));
    let sources = server.get_as(TOKEN, "/api/v1/sources").json();
    assert_eq!(sources["sources"][0]["write_keys"][0], KEY);

    // The analyst gets counts, and nothing about members.
    let stats = server.get_as(&s.analyst, "/api/v1/stats");
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["profiles"], 1);
    for path in [
        format!("/api/v1/profiles/{id}"),
        by_phone,
        format!("/api/v1/profiles/{id}/events"),
        "/api/v1/sources".to_string(),
    ] {
        let r = server.get_as(&s.analyst, &path);
        assert_eq!(r.status, 403, "{path}");
        let body = r.json();
        assert_eq!(body["code"], "forbidden");
        assert!(
            body["message"].as_str().unwrap_or("").contains("operator"),
            "{body}"
        );
    }

    // An operator may import files.
    let boundary = "roles-boundary";
    let mapping = "kind: identify\nidentifiers: { phone: 手机号 }\ntraits: { name: 姓名 }\nmessage_id: 手机号\n";
    let csv = "手机号,姓名\n13900002222,李雷\n";
    let mut body = String::new();
    for (part, file, content) in [("mapping", None, mapping), ("file", Some("crm.csv"), csv)] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\""
        ));
        if let Some(f) = file {
            body.push_str(&format!("; filename=\"{f}\""));
        }
        body.push_str(&format!("\r\n\r\n{content}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let auth = format!("Bearer {}", s.operator);
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let r = server.request(
        "POST",
        "/api/v1/sources/app/import",
        &[("Authorization", &auth), ("Content-Type", &ctype)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["summary"]["imported"], 1);
}

#[test]
fn the_audit_log_records_who_what_and_never_personal_values_or_tokens() {
    let s = setup();
    let (server, id) = (&s.server, s.profile);
    let by_phone = format!("/api/v1/profiles/by-identifier/phone/{PHONE}");
    assert_eq!(server.get_as(&s.operator, &by_phone).status, 200);
    assert_eq!(
        server
            .get_as(TOKEN, &format!("/api/v1/profiles/{id}"))
            .status,
        200
    );
    assert_eq!(server.get_as(&s.analyst, &by_phone).status, 403);
    assert_eq!(server.get_as("pat_nope", "/api/v1/stats").status, 401);
    // Failing requests must not leak either.
    assert_eq!(
        server
            .get_as(TOKEN, "/api/v1/profiles/by-identifier/phone/13911112222")
            .status,
        404
    );
    let r = server.request_as(
        Some(TOKEN),
        "POST",
        &format!("/api/v1/profiles/{id}/unmerge"),
        json!({"type": "phone", "value": "13911112222"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(!String::from_utf8_lossy(&r.body).contains("13911112222"));

    let audit = server.get_as(TOKEN, "/api/v1/audit?limit=50");
    assert_eq!(audit.status, 200);
    let entries = audit.json()["entries"].as_array().expect("entries").clone();
    let find = |path: &str, token: Value| {
        entries
            .iter()
            .find(|e| e["path"] == path && e["token"] == token)
            .unwrap_or_else(|| panic!("no entry for {path} by {token}: {entries:?}"))
            .clone()
    };
    let masked = find("/api/v1/profiles/by-identifier/phone/***", json!("ops"));
    assert_eq!(masked["role"], "operator");
    assert_eq!(masked["method"], "GET");
    assert_eq!(masked["status"], 200);
    assert_eq!(masked["pii"], "masked");
    assert!(
        masked["peer"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{masked}"
    );
    assert!(masked["at"].as_str().unwrap_or("").ends_with('Z'));
    let clear = find(&format!("/api/v1/profiles/{id}"), json!("admin"));
    assert_eq!(clear["pii"], "clear");
    let refused = find("/api/v1/profiles/by-identifier/phone/***", json!("bi"));
    assert_eq!(refused["status"], 403);
    assert!(refused.get("pii").is_none());
    let unknown = find("/api/v1/stats", Value::Null);
    assert_eq!(unknown["status"], 401);
    assert!(unknown["role"].is_null());
    // Newest first; `since` and `limit` filter.
    let times: Vec<&str> = entries.iter().filter_map(|e| e["at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let one = server.get_as(TOKEN, "/api/v1/audit?limit=1").json();
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        one["entries"][0]["path"], "/api/v1/audit",
        "the previous audit read is newest"
    );
    let future = server
        .get_as(TOKEN, "/api/v1/audit?since=2999-01-01T00:00:00Z")
        .json();
    assert_eq!(future["entries"], json!([]));
    assert_eq!(server.get_as(TOKEN, "/api/v1/audit?since=soon").status, 400);
    assert_eq!(server.get_as(&s.operator, "/api/v1/audit").status, 403);

    let data = s.dir.path().join("data");
    let file = std::fs::read_to_string(data.join("audit.jsonl")).expect("audit file");
    assert!(file.lines().count() >= 8);
    for line in file.lines() {
        serde_json::from_str::<Value>(line).expect("one JSON object per line");
    }
    let stderr_log = s.dir.path().join("stderr.log");
    let operator = s.operator.clone();
    let analyst = s.analyst.clone();
    s.server.stop();
    let stderr = std::fs::read_to_string(&stderr_log).expect("stderr log");
    assert!(stderr.contains("serving"), "the log was captured: {stderr}");
    for (what, text) in [("audit log", &file), ("stderr", &stderr)] {
        for secret in [
            PHONE,
            "13911112222",
            EMAIL,
            NAME,
            TOKEN,
            &operator,
            &analyst,
            KEY,
        ] {
            assert!(
                !text.contains(secret),
                "{what} contains `{secret}`:\n{text}"
            );
        }
    }
}

#[test]
fn tokens_are_hashed_managed_by_cli_and_api_and_unknown_roles_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    let ops = token_add(&data, "operator", "ops");
    let path = data.join("tokens.json");
    let stored = std::fs::read_to_string(&path).expect("tokens.json");
    assert!(!stored.contains(&ops), "the token itself is stored");
    assert!(stored.contains("sha256:"));
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (ok, _, err) = portrait(&["token", "add", "--data", d, "--role", "superuser"]);
    assert!(!ok && err.contains("unknown role `superuser`"), "{err}");
    let (ok, _, err) = portrait(&[
        "token", "add", "--data", d, "--role", "analyst", "--name", "ops",
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = portrait(&["token", "list", "--data", d]);
    assert!(ok && out.starts_with("ops\toperator\t"), "{out}");

    let server = Server::start(&data, &[]);
    let (ok, _, err) = portrait(&["token", "add", "--data", d, "--role", "analyst"]);
    assert!(
        !ok && err.contains("in use"),
        "token add must refuse while serving: {err}"
    );

    let created = server.request_as(
        Some(TOKEN),
        "POST",
        "/api/v1/tokens",
        br#"{"role": "analyst", "name": "dashboard"}"#,
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let created = created.json();
    assert_eq!(created["role"], "analyst");
    let secret = created["token"].as_str().expect("token").to_string();
    assert_eq!(server.get_as(&secret, "/api/v1/stats").status, 200);
    let listed = server.get_as(TOKEN, "/api/v1/tokens");
    let text = String::from_utf8_lossy(&listed.body).to_string();
    assert!(
        !text.contains(&secret) && !text.contains("sha256"),
        "{text}"
    );
    let listed = listed.json();
    let names: BTreeSet<&str> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["dashboard", "ops"]));
    for (body, status) in [
        (r#"{"role": "root"}"#, 400),
        (r#"{"role": "analyst", "name": "dashboard"}"#, 409),
        (r#"{"role": "analyst", "name": "admin"}"#, 400),
        (r#"{"role": "analyst", "name": "a b"}"#, 400),
    ] {
        let r = server.request_as(Some(TOKEN), "POST", "/api/v1/tokens", body.as_bytes());
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = server.request_as(
        Some(TOKEN),
        "POST",
        "/api/v1/tokens",
        br#"{"role": "root"}"#,
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("unknown role `root`"));
    assert_eq!(
        server
            .request_as(
                Some(&ops),
                "POST",
                "/api/v1/tokens",
                br#"{"role": "admin"}"#
            )
            .status,
        403,
        "an operator cannot mint tokens"
    );
    let deleted = server.request_as(Some(TOKEN), "DELETE", "/api/v1/tokens/dashboard", b"");
    assert_eq!(deleted.status, 200);
    assert_eq!(
        server.get_as(&secret, "/api/v1/stats").status,
        401,
        "revoked"
    );
    drop(server);
    // Revocation is durable, and the CLI sees it.
    let (_, out, _) = portrait(&["token", "list", "--data", d]);
    assert!(!out.contains("dashboard"), "{out}");

    // A tokens.json with an unknown role stops the server from starting.
    let stored = std::fs::read_to_string(&path).expect("tokens.json");
    std::fs::write(&path, stored.replace("\"operator\"", "\"superuser\"")).expect("write");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let mut child = std::process::Command::new(common::bin())
        .args(["serve", "--data", d, "--listen", &addr.to_string()])
        .env("PORTRAIT_ADMIN_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with an unknown role in tokens.json");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success());
    assert!(err.contains("unknown role `superuser`"), "{err}");
}
