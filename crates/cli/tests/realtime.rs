//! Real-time tags end to end through a real server: every event updates the profile's tags at
//! once, time alone turns a windowed rule off, saved audiences report entry, the change stream
//! (long poll and server-sent events) and a webhook with retries carry every change, state
//! survives `kill -9` with no change lost or repeated, and erasure removes the person's
//! changes. Definitions that cannot be maintained incrementally are refused with the reason.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{add_source, Server, TOKEN};
use serde_json::{json, Value};

const KEY: &str = "rt-write-key";

const TAGS: &str = r#"
name: views_7d
kind: metric
refresh: realtime
value: count(event = "Product Viewed", within 7d)
---
name: high_intent
title: 高意向用户
refresh: realtime
rule: count(event = "Product Viewed", within 7d) >= 3 or tag.spend_30d >= 500
---
name: spend_30d
kind: metric
refresh: realtime
value: sum(properties.revenue, event = "Order Completed", within 30d)
---
name: gold_viewer
refresh: realtime
rule: traits.level = "gold" and count(event = "Product Viewed", within 7d) >= 1
"#;

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn view(user: &str, id: &str, ts: i64) -> Value {
    json!({"type": "track", "userId": user, "messageId": id, "event": "Product Viewed",
           "timestamp": iso(ts), "properties": {"sku": "A1"}})
}

fn send(s: &Server, msgs: Vec<Value>) {
    let r = s.ingest("/v1/batch", KEY, &json!({ "batch": msgs }).to_string());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn profile_id(s: &Server, user: &str) -> u64 {
    let r = s.admin_get(&format!("/api/v1/profiles/by-identifier/user_id/{user}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_u64().expect("id")
}

/// Every change after `since`.
fn changes(s: &Server, since: u64) -> Vec<Value> {
    let r = s.admin_get(&format!("/api/v1/changes?since={since}&limit=10000"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["changes"].as_array().expect("changes").clone()
}

/// Waits (long poll) until a change matches.
fn wait_for(s: &Server, since: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cursor = since;
    while Instant::now() < deadline {
        let r = s.admin_get(&format!("/api/v1/changes?since={cursor}&wait=2000"));
        assert_eq!(r.status, 200);
        let v = r.json();
        for c in v["changes"].as_array().expect("changes") {
            if pred(c) {
                return c.clone();
            }
        }
        cursor = v["next"].as_u64().expect("next");
    }
    panic!("no change {what} within 20 s: {:?}", changes(s, since));
}

/// A webhook receiver on loopback: answers 500 to the first delivery, 200 afterwards, and
/// keeps every body and signature.
/// Bodies received, with their signature header.
type Received = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got: Received = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            let mut sig = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_string();
                if l.is_empty() {
                    break;
                }
                let lower = l.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-portrait-signature:") {
                    sig = Some(l["x-portrait-signature:".len()..].trim().to_string());
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            n += 1;
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if n > 1 {
                seen.lock()
                    .expect("lock")
                    .push((String::from_utf8_lossy(&body).to_string(), sig));
            }
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (url, got)
}

#[test]
fn realtime_tags_update_per_event_and_with_time_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    add_source(dir.path(), "app", "app", KEY);
    let s = Server::start(dir.path(), &[]);

    // A definition the engine cannot keep exactly is refused, naming the reason.
    let bad = "name: r_bucket\nkind: buckets\nrefresh: realtime\nof: count(event = \"Product Viewed\")\nquantiles: 5\n";
    let r = s.admin_post("/api/v1/tags?publish=true", bad);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("r_bucket") && msg.contains("quantiles"),
        "{msg}"
    );

    let r = s.admin_post("/api/v1/tags?publish=true", TAGS);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let status = s.admin_get("/api/v1/realtime").json();
    assert_eq!(status["tags"].as_array().map(Vec::len), Some(4), "{status}");

    // Three views: high intent at once, visible in the profile and the stream.
    let now = now_ms();
    let start = s.admin_get("/api/v1/changes").json()["last"]
        .as_u64()
        .unwrap_or(0);
    send(
        &s,
        (0..3)
            .map(|i| view("u1", &format!("u1-{i}"), now - 1000 + i))
            .collect(),
    );
    let id = profile_id(&s, "u1");
    let on = wait_for(&s, start, "high_intent on", |c| {
        c["name"] == "high_intent" && c["new"] == true && c["profile"] == id
    });
    assert_eq!(on["old"], false);
    assert_eq!(on["kind"], "tag");
    assert_eq!(on["cause"]["type"], "event");
    assert_eq!(on["cause"]["message_id"], "u1-2");
    let p = s.admin_get(&format!("/api/v1/profiles/{id}")).json();
    assert_eq!(p["tags"]["high_intent"], true, "{p}");
    assert_eq!(p["tags"]["views_7d"], 3, "{p}");
    assert_eq!(p["tags"]["gold_viewer"], false, "{p}");

    // A rule on a trait and events: the identify that sets the trait turns it on.
    let gold = json!({"type": "identify", "userId": "u1", "messageId": "u1-gold",
                      "traits": {"level": "gold", "city": "上海"}, "timestamp": iso(now_ms())});
    send(&s, vec![gold]);
    let gold = wait_for(&s, start, "gold_viewer on", |c| {
        c["name"] == "gold_viewer" && c["new"] == true && c["profile"] == id
    });
    assert_eq!(gold["cause"]["message_id"], "u1-gold", "{gold}");

    // The engine measures its own visibility lag per event (to the change stream, and to the
    // profile API: applied); a reset starts a new window.
    let status = s.admin_get("/api/v1/realtime").json();
    for v in [&status["visibility"], &status["applied"]] {
        assert!(v["events"].as_u64().unwrap_or(0) >= 3, "{v}");
        let (p50, p99, max) = (
            v["p50_ms"].as_f64(),
            v["p99_ms"].as_f64(),
            v["max_ms"].as_f64(),
        );
        assert!(
            matches!((p50, p99, max), (Some(a), Some(b), Some(c)) if 0.0 < a && a <= b && b <= c),
            "{v}"
        );
    }
    let r = s.admin_post("/api/v1/realtime/visibility/reset", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["ended"]["events"], status["visibility"]["events"]);
    assert_eq!(
        r.json()["ended_applied"]["events"],
        status["applied"]["events"]
    );
    let status = s.admin_get("/api/v1/realtime").json();
    assert_eq!(status["visibility"]["events"], 0, "{status}");
    assert_eq!(status["applied"]["events"], 0, "{status}");

    // Time alone: a view dated 7 days minus 3 s ago leaves the window 3 s from now.
    let t = now_ms();
    send(&s, vec![view("u2", "u2-1", t - 7 * 86_400_000 + 3_000)]);
    let u2 = profile_id(&s, "u2");
    let p = s.admin_get(&format!("/api/v1/profiles/{u2}")).json();
    assert_eq!(p["tags"]["views_7d"], 1, "{p}");
    let off = wait_for(&s, start, "views_7d back to 0 by the timer", |c| {
        c["profile"] == u2 && c["name"] == "views_7d" && c["new"] == 0
    });
    assert_eq!(off["cause"]["type"], "timer", "{off}");
    assert!(now_ms() - t >= 2_500, "the timer fired early");

    // A saved audience over realtime tags reports entry (tags must be stored once first).
    let r = s.admin_post("/api/v1/compute", "{}");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = s.admin_post(
        "/api/v1/audiences",
        &json!({"name": "hot_buyers", "expression": "high_intent and spend_30d >= 500"})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before_order = s.admin_get("/api/v1/changes").json()["last"]
        .as_u64()
        .unwrap_or(0);
    send(
        &s,
        vec![
            json!({"type": "track", "userId": "u1", "messageId": "u1-order",
                    "event": "Order Completed", "timestamp": iso(now_ms()),
                    "properties": {"revenue": 888}}),
        ],
    );
    let entered = wait_for(&s, before_order, "audience entry", |c| {
        c["kind"] == "audience" && c["name"] == "hot_buyers" && c["profile"] == id
    });
    assert_eq!(entered["new"], true);
    let p = s.admin_get(&format!("/api/v1/profiles/{id}")).json();
    assert_eq!(p["audiences"], json!(["hot_buyers"]), "{p}");

    // Readers can ask for the changes of some names or one kind only.
    let only = s
        .admin_get("/api/v1/changes?since=0&names=hot_buyers,nothing")
        .json();
    let only = only["changes"].as_array().expect("changes");
    assert!(!only.is_empty() && only.iter().all(|c| c["name"] == "hot_buyers"));
    let tags_only = s.admin_get("/api/v1/changes?since=0&kind=tag").json();
    assert!(tags_only["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .all(|c| c["kind"] == "tag"));
    assert_eq!(s.admin_get("/api/v1/changes?kind=person").status, 400);

    // Server-sent events: the stream replays from the cursor and names each event's id.
    let sse = sse_first_event(&s, before_order);
    assert!(
        sse.contains("event: change") && sse.contains("hot_buyers"),
        "{sse}"
    );

    // A webhook registered from the start of the stream gets everything, after a retry.
    let (url, got) = receiver();
    let r = s.admin_post(
        "/api/v1/webhooks",
        &json!({"url": url, "secret": "s3cret", "since": 0, "kinds": ["audience"]}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().expect("lock").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered = got.lock().expect("lock").clone();
    assert!(!delivered.is_empty(), "no delivery after a retry");
    let (body, sig) = &delivered[0];
    let body: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(body["changes"][0]["name"], "hot_buyers");
    assert!(body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .all(|c| c["kind"] == "audience"));
    assert!(
        sig.as_deref().is_some_and(|s| s.starts_with("sha256=")),
        "{sig:?}"
    );
    let hooks = s.admin_get("/api/v1/webhooks").json();
    assert_eq!(hooks["webhooks"][0]["failures"], 0, "{hooks}");
    assert!(hooks["webhooks"][0].get("secret").is_none());

    // A merge combines the two profiles' states; an unmerge rebuilds the parts from events.
    let m0 = s.admin_get("/api/v1/changes").json()["last"]
        .as_u64()
        .unwrap_or(0);
    // In the past: an event dated after the server clock counts only once its time comes.
    let t = now_ms() - 10_000;
    send(&s, vec![view("u4", "u4-1", t), view("u4", "u4-2", t + 1)]);
    let anon = |id: &str, ts: i64| {
        json!({"type": "track", "anonymousId": "device-4", "messageId": id,
               "event": "Product Viewed", "timestamp": iso(ts), "properties": {}})
    };
    send(&s, vec![anon("a4-1", t + 2), anon("a4-2", t + 3)]);
    send(
        &s,
        vec![
            json!({"type": "identify", "userId": "u4", "anonymousId": "device-4",
                    "messageId": "link-4", "timestamp": iso(t + 4)}),
        ],
    );
    let u4 = profile_id(&s, "u4");
    let merged = wait_for(&s, m0, "high_intent after the merge", |c| {
        c["name"] == "high_intent" && c["new"] == true && c["profile"] == u4
    });
    assert_eq!(merged["cause"]["type"], "merge", "{merged}");
    let p = s.admin_get(&format!("/api/v1/profiles/{u4}")).json();
    assert_eq!(p["tags"]["views_7d"], 4, "{p}");
    let r = s.admin_post(
        &format!("/api/v1/profiles/{u4}/unmerge"),
        &json!({"type": "anonymous_id", "value": "device-4"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let u4 = profile_id(&s, "u4");
    let p = s.admin_get(&format!("/api/v1/profiles/{u4}")).json();
    assert_eq!(p["tags"]["views_7d"], 2, "{p}");
    assert_eq!(p["tags"]["high_intent"], false, "{p}");

    // kill -9: values, memberships and the stream are recovered; nothing is published twice.
    let all_before = changes(&s, 0);
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    let p = s.admin_get(&format!("/api/v1/profiles/{id}")).json();
    assert_eq!(p["tags"]["high_intent"], true, "{p}");
    assert_eq!(p["tags"]["spend_30d"], 888, "{p}");
    assert_eq!(p["audiences"], json!(["hot_buyers"]), "{p}");
    std::thread::sleep(Duration::from_millis(500));
    let all_after = changes(&s, 0);
    assert_eq!(all_after, all_before, "recovery published changes again");
    // And it keeps going: one more view, one more change with the next cursor.
    send(&s, vec![view("u1", "u1-late", now_ms())]);
    let more = wait_for(&s, 0, "views_7d 4", |c| {
        c["profile"] == id && c["name"] == "views_7d" && c["new"] == 4
    });
    // After a crash cursors skip ahead (no reader's cursor is reused): the next change's
    // cursor is above every earlier one.
    let last_before = all_before
        .last()
        .and_then(|c| c["seq"].as_u64())
        .unwrap_or(0);
    assert!(more["seq"].as_u64().unwrap_or(0) > last_before, "{more}");

    // A clean stop writes a snapshot; after a restart from it, more events, then kill -9: the
    // recovery is that snapshot plus the log after it, again without repeats.
    s.stop();
    let s = Server::start(dir.path(), &[]);
    assert!(dir.path().join("realtime/state.bin").exists());
    let base = s.admin_get("/api/v1/changes").json()["last"]
        .as_u64()
        .unwrap_or(0);
    send(&s, vec![view("u1", "u1-after-snapshot", now_ms())]);
    wait_for(&s, base, "views_7d 5", |c| {
        c["profile"] == id && c["name"] == "views_7d" && c["new"] == 5
    });
    let before = changes(&s, 0);
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    let p = s.admin_get(&format!("/api/v1/profiles/{id}")).json();
    assert_eq!(p["tags"]["views_7d"], 5, "{p}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        changes(&s, 0),
        before,
        "recovery from the snapshot published changes again"
    );

    // Erasure removes the person's changes from the stream (and the state).
    let auth = format!("Bearer {TOKEN}");
    let r = s.request(
        "DELETE",
        &format!("/api/v1/profiles/{id}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(changes(&s, 0).iter().all(|c| c["profile"] != id));
    let stream_dir = dir.path().join("realtime").join("changes");
    for f in std::fs::read_dir(stream_dir).expect("dir") {
        let text = std::fs::read_to_string(f.expect("entry").path()).expect("read");
        assert!(!text.contains(&format!("\"profile\":{id},")));
    }
    s.stop();
}

/// The first event of `GET /api/v1/changes` as server-sent events.
fn sse_first_event(s: &Server, since: u64) -> String {
    let mut stream = std::net::TcpStream::connect(s.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/v1/changes?since={since} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\n\n\r\n")
        && !String::from_utf8_lossy(&got).contains("data: ")
    {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // Read a little more so the whole first event is in.
    std::thread::sleep(Duration::from_millis(200));
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    if let Ok(n) = stream.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}
