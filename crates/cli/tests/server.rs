//! End-to-end tests of `portrait serve`: durability under SIGKILL, dedup of retries, refusal of
//! bad input without partial writes, and the admin API.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{add_source, portrait, Server};
use serde_json::{json, Value};

const KEY: &str = "app-write-key";

fn setup() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    add_source(dir.path(), "app", "app", KEY);
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

fn batch_body(start: usize, n: usize) -> String {
    let batch: Vec<Value> = (start..start + n)
        .map(|i| {
            json!({"type": "track", "userId": format!("u{i}"), "event": "Product Viewed",
                   "messageId": format!("m{i}"), "properties": {"i": i},
                   "timestamp": "2024-06-18T10:00:00Z"})
        })
        .collect();
    json!({ "batch": batch }).to_string()
}

fn events(server: &Server) -> u64 {
    server.admin_get("/api/v1/stats").json()["events"]
        .as_u64()
        .expect("events")
}

#[test]
fn kill9_mid_load_loses_no_acknowledged_event_and_doubles_none() {
    let (dir, server) = setup();
    let addr = server.addr;
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    const PER: usize = 50;
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let auth = common::basic(KEY);
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = batch_body(batch * PER, PER);
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                ];
                match common::request(addr, "POST", "/v1/batch", &headers, body.as_bytes()) {
                    Ok(r) if r.status == 200 => acked.lock().expect("lock").push(batch),
                    _ => break,
                }
                batch += 1;
            }
        })
    };
    while acked.lock().expect("lock").len() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let acked = acked.lock().expect("lock").clone();

    let server = Server::start(dir.path(), &[]);
    let stored = events(&server);
    assert!(
        stored >= (acked.len() * PER) as u64,
        "stored {stored} < acked {}",
        acked.len() * PER
    );
    for &b in &acked {
        for i in [b * PER, b * PER + PER - 1] {
            let p = server.admin_get(&format!("/api/v1/profiles/by-identifier/user_id/u{i}"));
            assert_eq!(p.status, 200, "acked event of u{i} missing after kill -9");
            assert_eq!(p.json()["event_count"], 1, "u{i} doubled");
        }
    }
    // Clients retry what they sent: every acknowledged message is a duplicate now.
    for &b in &acked {
        let r = server
            .ingest("/v1/batch", KEY, &batch_body(b * PER, PER))
            .json();
        assert_eq!(r["accepted"], 0);
        assert_eq!(r["duplicates"], PER);
    }
    assert_eq!(events(&server), stored);
}

#[test]
fn a_retry_with_the_same_message_ids_leaves_the_profile_unchanged() {
    let (_dir, server) = setup();
    let body = json!({"batch": [
        {"type": "identify", "userId": "li", "messageId": "i1", "traits": {"phone": "13800001234", "level": "gold"}},
        {"type": "track", "userId": "li", "messageId": "t1", "event": "Order Completed", "properties": {"revenue": 99.5}}
    ]})
    .to_string();
    assert_eq!(server.ingest("/v1/batch", KEY, &body).status, 200);
    let before = server
        .admin_get("/api/v1/profiles/by-identifier/phone/13800001234")
        .json();
    let again = server.ingest("/v1/batch", KEY, &body);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["duplicates"], 2);
    let after = server
        .admin_get("/api/v1/profiles/by-identifier/phone/13800001234")
        .json();
    assert_eq!(before, after);
    assert_eq!(after["event_count"], 2);
}

#[test]
fn bad_input_gets_a_clear_4xx_and_nothing_is_half_written() {
    let (_dir, server) = setup();
    let ok = json!({"type": "track", "userId": "a", "event": "E", "messageId": "ok-1"});
    type Case<'a> = (&'a str, String, u16, Option<(u64, &'a str)>);
    let cases: Vec<Case> = vec![
        ("malformed JSON", r#"{"batch": [{"type": "track""#.into(), 400, None),
        ("batch not an array", r#"{"batch": {"a": 1}}"#.into(), 400, None),
        ("wrong type for userId",
         json!({"batch": [ok, {"type": "track", "userId": {"x": 1}, "event": "E"}]}).to_string(), 400, Some((1, "userId"))),
        ("missing ids",
         json!({"batch": [ok, ok, {"type": "track", "event": "E"}]}).to_string(), 400, Some((2, "userId"))),
        ("bad timestamp",
         json!({"batch": [ok, {"type": "identify", "userId": "b", "timestamp": "next tuesday"}]}).to_string(), 400, Some((1, "timestamp"))),
        ("blocked identifier only",
         json!({"batch": [{"type": "identify", "userId": "undefined"}]}).to_string(), 400, Some((0, "userId"))),
        ("message not an object",
         json!({"batch": [ok, [ok]]}).to_string(), 400, Some((1, ""))),
        ("batch context not an object",
         json!({"batch": [ok], "context": ["traits"]}).to_string(), 400, None),
        ("context traits not an object",
         json!({"batch": [ok], "context": {"traits": "vip"}}).to_string(), 400, Some((0, "context.traits"))),
        ("unknown type",
         json!({"batch": [{"type": "shout", "userId": "b"}]}).to_string(), 400, Some((0, "type"))),
        ("oversized message",
         json!({"batch": [ok, {"type": "track", "userId": "b", "event": "E", "properties": {"blob": "x".repeat(40_000)}}]}).to_string(), 413, None),
        ("oversized body",
         json!({"batch": (0..400).map(|i| json!({"type": "track", "userId": format!("b{i}"), "event": "E", "properties": {"blob": "y".repeat(2_000)}})).collect::<Vec<_>>()}).to_string(), 413, None),
    ];
    for (what, body, status, detail) in cases {
        let r = server.ingest("/v1/batch", KEY, &body);
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {j}"
        );
        if let Some((index, field)) = detail {
            assert_eq!(j["index"], index, "{what}: {j}");
            assert_eq!(j["field"], field, "{what}: {j}");
        }
    }
    assert_eq!(events(&server), 0, "a refused request stored something");

    for (what, body) in [
        ("malformed JSON", &br#"{"userId":"a","event":"#[..]),
        (
            "invalid UTF-8",
            &b"{\"userId\":\"\xff\",\"event\":\"E\"}"[..],
        ),
        ("not an object", &b"[1]"[..]),
    ] {
        let auth = common::basic(KEY);
        let r = server.request("POST", "/v1/track", &[("Authorization", &auth)], body);
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(events(&server), 0, "a refused request stored something");

    let no_auth = server.request("POST", "/v1/track", &[], br#"{"userId":"a","event":"E"}"#);
    assert_eq!(no_auth.status, 401);
    assert_eq!(
        server
            .ingest("/v1/track", "wrong-key", r#"{"userId":"a","event":"E"}"#)
            .status,
        401
    );
    assert_eq!(server.request("GET", "/api/v1/stats", &[], b"").status, 401);
    // The write key may also come in the body.
    let body_key = server.request(
        "POST",
        "/v1/track",
        &[],
        br#"{"writeKey":"app-write-key","userId":"a","event":"E"}"#,
    );
    assert_eq!(body_key.status, 200);
    assert_eq!(events(&server), 1);
}

#[test]
fn gzip_bodies_and_rudderstack_form_encoded_gzip() {
    let (_dir, server) = setup();
    let body = json!({"batch": [{"type": "track", "anonymousId": "anon-9", "event": "App Opened"}],
                      "context": {"traits": {"phone": "+86 139-0000-9999"}},
                      "sentAt": "2024-01-01T00:00:00Z"})
    .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let auth = common::basic(KEY);
    let r = server.request(
        "POST",
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gz,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = server.request(
        "POST",
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &gz,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Batch-level context.traits reached the message: the phone identifies the visitor.
    let p = server.admin_get("/api/v1/profiles/by-identifier/phone/13900009999");
    assert_eq!(p.status, 200);
    assert_eq!(
        p.json()["event_count"],
        1,
        "same content, same derived messageId: deduplicated"
    );
}

#[test]
fn admin_api_sources_profiles_timeline_merges_and_unmerge() {
    let (dir, server) = setup();
    let created = server.admin_post("/api/v1/sources", r#"{"name": "pos", "kind": "pos"}"#);
    assert_eq!(created.status, 201);
    let pos_key = created.json()["write_keys"][0]
        .as_str()
        .expect("key")
        .to_string();
    assert_eq!(
        server
            .admin_post("/api/v1/sources", r#"{"name": "pos", "kind": "pos"}"#)
            .status,
        409
    );
    assert_eq!(
        server
            .admin_post("/api/v1/sources", r#"{"name": "x", "kind": "tv"}"#)
            .status,
        400
    );

    let app = json!({"batch": [
        {"type": "track", "anonymousId": "dev-1", "event": "Product Viewed", "messageId": "a1",
         "timestamp": "2024-06-01T00:00:00Z", "context": {"traits": {"email": "Shared@Typo.cn"}}},
        {"type": "identify", "userId": "u-1", "anonymousId": "dev-1", "messageId": "a2",
         "timestamp": "2024-06-02T00:00:00Z", "traits": {"name": "韩梅梅"}}
    ]});
    assert_eq!(
        server.ingest("/v1/batch", KEY, &app.to_string()).status,
        200
    );
    let pos = json!({"type": "track", "anonymousId": "card-7", "event": "Store Purchase", "messageId": "p1",
                     "timestamp": "2024-06-03T00:00:00Z",
                     "context": {"traits": {"phone": "13700007777", "email": "shared@typo.cn"}}});
    assert_eq!(
        server
            .ingest("/v1/track", &pos_key, &pos.to_string())
            .status,
        200
    );

    let p = server
        .admin_get("/api/v1/profiles/by-identifier/user_id/u-1")
        .json();
    let id = p["id"].as_u64().expect("id");
    assert_eq!(p["event_count"], 3);
    assert_eq!(p["sources"], json!({"app": 2, "pos": 1}));
    assert_eq!(p["traits"]["name"]["value"], "韩梅梅");
    assert_eq!(p["traits"]["name"]["source"], "app");

    let page1 = server
        .admin_get(&format!("/api/v1/profiles/{id}/events?limit=2"))
        .json();
    assert_eq!(page1["events"][0]["messageId"], "p1", "newest first");
    assert_eq!(page1["events"][0]["source"], "pos");
    let next = page1["next"].as_u64().expect("more pages");
    let page2 = server
        .admin_get(&format!(
            "/api/v1/profiles/{id}/events?limit=2&cursor={next}"
        ))
        .json();
    assert_eq!(page2["events"][0]["messageId"], "a1");
    assert!(page2["next"].is_null());

    let merges = server
        .admin_get(&format!("/api/v1/profiles/{id}/merges"))
        .json();
    let history = merges["merges"].as_array().expect("history");
    let actions: Vec<(&str, &str)> = history
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["message_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions, [("link", "a2"), ("link", "p1")]);
    assert_eq!(history[1]["source"], "pos");
    assert_eq!(
        history[1]["identifiers"],
        json!([{"type": "phone", "value": "+8613700007777"}, {"type": "anonymous_id", "value": "card-7"}])
    );

    // The shared email wrongly joined the store card: split it off.
    let split = server.admin_post(
        &format!("/api/v1/profiles/{id}/unmerge"),
        r#"{"type": "email", "value": "shared@typo.cn"}"#,
    );
    assert_eq!(
        split.status,
        200,
        "{}",
        String::from_utf8_lossy(&split.body)
    );
    assert_eq!(split.json()["profiles"].as_array().map(Vec::len), Some(2));
    let app_side = server
        .admin_get("/api/v1/profiles/by-identifier/user_id/u-1")
        .json();
    let pos_side = server
        .admin_get("/api/v1/profiles/by-identifier/phone/13700007777")
        .json();
    assert_ne!(app_side["id"], pos_side["id"]);
    assert_eq!(pos_side["event_count"], 1);
    let bad = server.admin_post(
        &format!("/api/v1/profiles/{id}/unmerge"),
        r#"{"type": "fax", "value": "1"}"#,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(server.admin_get("/api/v1/profiles/999999").status, 404);

    // The CLI reads the same data once the server is gone.
    drop(server);
    let d = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = portrait(&[
        "profile",
        "--data",
        d,
        "--identifier",
        "phone:+86 137 0000 7777",
    ]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["id"], pos_side["id"]);
    assert_eq!(shown["events"][0]["event"], "Store Purchase");
    let (ok, _, err) = portrait(&["profile", "--data", d, "--identifier", "fax:1"]);
    assert!(!ok && err.contains("unknown identifier type"), "{err}");
}

#[test]
fn admin_token_is_generated_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut child = std::process::Command::new(common::bin())
        .args([
            "serve",
            "--data",
            dir.path().to_str().expect("utf-8"),
            "--listen",
            &addr.to_string(),
        ])
        .env_remove("PORTRAIT_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let path = dir.path().join("admin_token");
    for _ in 0..200 {
        if common::request(addr, "GET", "/health", &[], b"").is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(&path).expect("token file");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let auth = format!("Bearer {token}");
    let r = common::request(
        addr,
        "GET",
        "/api/v1/stats",
        &[("Authorization", &auth)],
        b"",
    )
    .expect("stats");
    assert_eq!(r.status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn file_upload_through_the_admin_api_imports_good_rows_and_reports_bad_ones() {
    let (_dir, server) = setup();
    assert_eq!(
        server
            .admin_post(
                "/api/v1/sources",
                r#"{"name": "tmall", "kind": "ecommerce"}"#
            )
            .status,
        201
    );
    let mapping = "kind: track\nevent: Order Completed\nidentifiers: { phone: 手机号, tmall_nick: 买家昵称 }\n\
                   timestamp: { column: 付款时间, format: \"%Y-%m-%d %H:%M:%S\" }\n\
                   properties: { order_id: 订单号, revenue: { column: 实付金额, type: decimal } }\nmessage_id: 订单号\n";
    let csv = "订单号,买家昵称,手机号,付款时间,实付金额\n\
               T1,小王,138-0000-0001,2024-11-11 00:01:02,199.00\n\
               T2,,138****0000,2024-11-11 00:02:00,99.5\n\
               T3,小李,13900000002,yesterday,10\n";
    let boundary = "portrait-test-boundary";
    let mut body = String::new();
    for (name, file, content) in [
        ("mapping", None, mapping),
        ("file", Some("orders.csv"), csv),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        ));
        if let Some(f) = file {
            body.push_str(&format!("; filename=\"{f}\""));
        }
        body.push_str(&format!("\r\n\r\n{content}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let auth = format!("Bearer {}", common::TOKEN);
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let upload = || {
        server.request(
            "POST",
            "/api/v1/sources/tmall/import",
            &[("Authorization", &auth), ("Content-Type", &ctype)],
            body.as_bytes(),
        )
    };
    let r = upload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let summary = r.json()["summary"].clone();
    assert_eq!(summary["rows"], 3);
    assert_eq!(summary["imported"], 1);
    assert_eq!(summary["rejected"], 2);
    assert_eq!(
        summary["first_rejects"][0][0], 3,
        "line numbers count the header as line 1"
    );
    let p = server.admin_get("/api/v1/profiles/by-identifier/tmall_nick/小王");
    assert_eq!(p.status, 200);
    assert_eq!(p.json()["sources"]["tmall"], 1);
    // The same upload again changes nothing.
    let again = upload().json();
    assert_eq!(again["summary"]["imported"], 0);
    assert_eq!(again["summary"]["duplicates"], 1);
    // A broken mapping is a 400 that says what is wrong.
    let bad = body.replace("kind: track", "kind: shout");
    let r = server.request(
        "POST",
        "/api/v1/sources/tmall/import",
        &[("Authorization", &auth), ("Content-Type", &ctype)],
        bad.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains("kind"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}
