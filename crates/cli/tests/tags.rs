//! The tag engine end to end through the admin API: definitions applied and published,
//! computed at an `as_of` over the lake, values on the profile, explanations, audiences
//! (preview, save, export with consent), versions with impact previews, archiving rules, and
//! errors that point at the line and column.

mod common;

use common::{add_source, portrait, Server};
use serde_json::{json, Value};

const KEY: &str = "shop-write-key";

const TAGS: &str = r#"
name: high_intent
title: 高意向用户
owner: growth
refresh: hourly
rule: >
  count(event = "Product Viewed", within 7d) >= 5
  and (count(event = "Product Favorited", within 7d) >= 1
       or count(event = "Product Added", within 7d) >= 2)
---
name: spend_90d
title: 近90天消费金额
kind: metric
value: sum(properties.revenue, event = "Order Completed", within 90d)
---
name: lifecycle
kind: stage
cases:
  - churned:  days_since(last(event = "Order Completed")) > 180
  - dormant:  days_since(last(event = "Order Completed")) > 30
  - active:   count(event = "Order Completed", within 30d) >= 1 and count(event = "Order Completed") >= 2
  - new:      count(event = "Order Completed") >= 1
  - prospect: true
---
name: vip
rule: tag.spend_90d >= 500 and tag.lifecycle in ("active", "new")
"#;

/// A track call; u3 is an anonymous visitor (device id only) until a merge.
fn track(user: &str, n: usize, event: &str, ts: &str, props: Value) -> Value {
    let id_field = if user == "u3" {
        "anonymousId"
    } else {
        "userId"
    };
    json!({"type": "track", id_field: user, "messageId": format!("{user}-{n}"), "event": event,
           "timestamp": ts, "properties": props})
}

/// Three people, as of 2024-06-30T16:00:00Z:
/// - u1: 6 views and 2 carts in the last 7 days, 2 orders (600 in 90 days, one 10 days ago) → high intent, active, vip
/// - u2: one order of 80 forty days ago, 2 views → dormant
/// - u3: only views → prospect
fn events() -> Value {
    let mut b = Vec::new();
    let mut n = 0;
    let mut push = |user: &str, event: &str, ts: &str, props: Value| {
        n += 1;
        b.push(track(user, n, event, ts, props));
    };
    for d in 24..30 {
        push(
            "u1",
            "Product Viewed",
            &format!("2024-06-{d}T10:00:00Z"),
            json!({"sku": "A1"}),
        );
    }
    push("u1", "Product Added", "2024-06-29T10:00:00Z", json!({}));
    push("u1", "Product Added", "2024-06-30T10:00:00Z", json!({}));
    push(
        "u1",
        "Order Completed",
        "2024-05-01T10:00:00Z",
        json!({"revenue": 400}),
    );
    push(
        "u1",
        "Order Completed",
        "2024-06-20T10:00:00Z",
        json!({"revenue": "200"}),
    );
    push(
        "u2",
        "Order Completed",
        "2024-05-21T10:00:00Z",
        json!({"revenue": 80}),
    );
    push("u2", "Product Viewed", "2024-06-29T10:00:00Z", json!({}));
    push("u2", "Product Viewed", "2024-06-29T11:00:00Z", json!({}));
    push("u3", "Product Viewed", "2024-06-30T12:00:00Z", json!({}));
    // After as_of: must not count.
    push(
        "u3",
        "Order Completed",
        "2024-07-02T12:00:00Z",
        json!({"revenue": 9999}),
    );
    let mut identify = vec![
        json!({"type": "identify", "userId": "u1", "messageId": "id-u1", "timestamp": "2024-01-01T00:00:00Z",
               "traits": {"phone": "13800000001", "consent": {"sms": {"marketing": "granted"}}}}),
        json!({"type": "identify", "userId": "u2", "messageId": "id-u2", "timestamp": "2024-01-01T00:00:00Z",
               "traits": {"phone": "13800000002"}}),
    ];
    identify.extend(b);
    json!({"batch": identify})
}

fn id_of(server: &Server, user: &str) -> u64 {
    let kind = if user == "u3" {
        "anonymous_id"
    } else {
        "user_id"
    };
    server
        .admin_get(&format!("/api/v1/profiles/by-identifier/{kind}/{user}"))
        .json()["id"]
        .as_u64()
        .expect("id")
}

#[test]
fn tags_are_applied_computed_explained_and_select_audiences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "shop", "ecommerce", KEY);
    let server = Server::start(&data, &[]);
    assert_eq!(
        server
            .ingest("/v1/batch", KEY, &events().to_string())
            .status,
        200
    );

    // A broken definition: a 400 naming the line and column, nothing recorded.
    let r = server.admin_post(
        "/api/v1/tags",
        "name: broken\nrule: count(event = \"X\", within 7x) >= 1\n",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "invalid_definition");
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(":2:"), "points at line 2: {msg}");
    assert_eq!(server.admin_get("/api/v1/tags").json()["tags"], json!([]));

    let r = server.admin_post("/api/v1/tags?publish=true", TAGS);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["tags"].as_array().map(Vec::len), Some(4));

    let r = server.admin_post("/api/v1/compute", r#"{"as_of": "2024-06-30T16:00:00Z"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    assert_eq!(report["profiles"], 3, "{report}");

    // Names never ingested are warnings with the closest name seen in the data.
    let r = server.admin_post(
        "/api/v1/tags",
        "name: typo\nrule: count(event = \"Order Complete\") >= 1\n",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let warnings = r.json()["warnings"].to_string();
    assert!(warnings.contains("Order Completed"), "{warnings}");

    let (u1, u2, u3) = (
        id_of(&server, "u1"),
        id_of(&server, "u2"),
        id_of(&server, "u3"),
    );
    let tags = |id: u64| server.admin_get(&format!("/api/v1/profiles/{id}")).json()["tags"].clone();
    assert_eq!(
        tags(u1),
        json!({"high_intent": true, "spend_90d": 600.0, "lifecycle": "active", "vip": true})
    );
    assert_eq!(tags(u2)["lifecycle"], "dormant");
    assert_eq!(tags(u2)["spend_90d"], 80.0);
    assert_eq!(tags(u2)["high_intent"], false);
    assert_eq!(
        tags(u3)["lifecycle"],
        "prospect",
        "the order after as_of does not exist"
    );
    assert_eq!(tags(u3)["spend_90d"], 0.0);

    // Why u1 is high intent.
    let e = server
        .admin_get(&format!("/api/v1/profiles/{u1}/tags/high_intent/explain"))
        .json();
    assert_eq!(e["value"], "true", "{e}");
    let summary = e["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("count(event = \"Product Viewed\", within 7d) = 6 >= 5 ✓"),
        "{summary}"
    );
    assert!(summary.contains("= 0 >= 1 ✗"), "{summary}");

    // Audiences.
    let p = server
        .admin_post(
            "/api/v1/audiences/preview",
            r#"{"expression": "lifecycle in (\"active\", \"dormant\") and not high_intent"}"#,
        )
        .json();
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["sample"], json!([u2]));
    let p = server
        .admin_post(
            "/api/v1/audiences/preview",
            r#"{"expression": "spend_90d >= 50 and spend_90d < 1000"}"#,
        )
        .json();
    assert_eq!(p["count"], 2, "{p}");
    let r = server.admin_post(
        "/api/v1/audiences/preview",
        r#"{"expression": "lifecycle = \"active\" and count(event = \"X\") > 1"}"#,
    );
    assert_eq!(r.status, 400, "aggregates are not audience terms");
    // Consent is usable in audiences (and rules) as traits.consent.<channel>.<purpose>.
    let p = server
        .admin_post(
            "/api/v1/audiences/preview",
            r#"{"expression": "spend_90d > 0 and traits.consent.sms.marketing = \"granted\""}"#,
        )
        .json();
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["sample"], json!([u1]));
    let r = server.admin_post("/api/v1/audiences", r#"{"name": "buyers", "expression": "spend_90d > 0", "title": "购买过的人", "owner": "crm"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["size"], 2);

    // A merge between computations: u3 joins u1 (same phone). The retired id leaves the tag
    // store at once, so nobody is counted twice before the next computation.
    let merge = json!({"type": "identify", "userId": "u1", "anonymousId": "u3", "messageId": "merge-u3",
        "timestamp": "2024-06-30T13:00:00Z"});
    assert_eq!(
        server
            .ingest("/v1/identify", KEY, &merge.to_string())
            .status,
        200
    );
    assert_eq!(id_of(&server, "u3"), u1.min(u3));
    let p = server
        .admin_post(
            "/api/v1/audiences/preview",
            r#"{"expression": "lifecycle in (\"active\", \"prospect\")"}"#,
        )
        .json();
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["universe"], 2, "{p}");

    // Export by phone for SMS: u1 consented, u2 did not.
    let r = server.admin_get("/api/v1/audiences/buyers/export?identifier=phone");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("profile_id,phone\n{u1},+8613800000001\n")
    );
    assert_eq!(r.header("x-portrait-skipped-no-consent"), Some("1"));
    let r = server
        .admin_get("/api/v1/audiences/buyers/export?identifier=phone&consent=false&format=jsonl");
    assert_eq!(String::from_utf8_lossy(&r.body).lines().count(), 2);

    // A new version: impact preview, then publish; archiving a tag in use is refused.
    let changed = TAGS.replace("tag.spend_90d >= 500", "tag.spend_90d >= 50");
    let r = server.admin_post("/api/v1/tags", &changed).json();
    let vip = r["tags"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "vip"))
        .cloned()
        .expect("vip");
    assert_eq!(vip["version"], 2);
    assert_eq!(vip["created"], true);
    let unchanged = r["tags"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "lifecycle"))
        .cloned()
        .expect("lifecycle");
    assert_eq!(
        unchanged["created"], false,
        "an identical definition makes no version"
    );
    let i = server.admin_get("/api/v1/tags/vip/impact").json();
    assert_eq!(
        (i["gained"].clone(), i["lost"].clone()),
        (json!(0), json!(0)),
        "u2 is dormant: {i}"
    );
    assert_eq!(
        server.admin_post("/api/v1/tags/vip/publish", "").status,
        200
    );
    let t = server.admin_get("/api/v1/tags/vip").json();
    assert_eq!(t["published_version"], 2, "{t}");
    assert_eq!(t["versions"][0]["state"], "superseded");
    let r = server.admin_post("/api/v1/tags/spend_90d/archive", "");
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("vip"));
    let t = server.admin_get("/api/v1/tags/spend_90d").json();
    assert_eq!(t["used_by"]["tags"], json!(["vip"]));
    assert_eq!(t["reads"]["events"], json!(["Order Completed"]));
    assert_eq!(t["used_by"]["audiences"], json!(["buyers"]));
    assert!(t["last_computed"]["population"].as_u64().is_some(), "{t}");
    assert!(t["last_used"].is_string(), "read by the audience: {t}");
    server.stop();

    // The CLI sees the same catalog and prints the plan and the SQL.
    let d = data.to_str().expect("utf-8");
    let (ok, out, err) = portrait(&["tags", "explain", "--data", d, "lifecycle"]);
    assert!(ok, "{err}");
    assert!(out.contains("SELECT") && out.contains("FILTER"), "{out}");
    let (ok, out, err) = portrait(&[
        "compute",
        "--data",
        d,
        "--as-of",
        "2024-06-30T16:00:00Z",
        "--engine",
        "datafusion",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    let vip = report["tags"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "vip"))
        .cloned()
        .expect("vip");
    assert_eq!(
        vip["population"], 1,
        "DataFusion computes the same values: {report}"
    );
    let (ok, out, _) = portrait(&[
        "audience",
        "preview",
        "--data",
        d,
        "lifecycle = \"prospect\"",
    ]);
    assert!(ok);
    assert!(
        out.starts_with("0 of 2 profiles"),
        "u3 merged into u1: {out}"
    );

    // Erasure reaches the tag store: the person leaves every bitmap and column at once.
    let (ok, _, err) = portrait(&["erase", "--data", d, "--id", &u2.to_string()]);
    assert!(ok, "{err}");
    let (ok, out, _) = portrait(&[
        "audience",
        "preview",
        "--data",
        d,
        "lifecycle = \"dormant\"",
    ]);
    assert!(ok);
    assert!(out.starts_with("0 of 1 profiles"), "{out}");
    let store = data.join("tags").join("store");
    let mut found = false;
    for e in std::fs::read_dir(&store).expect("store dir") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("read");
        found |= !bytes.is_empty();
    }
    assert!(found, "the tag store is on disk");
}
