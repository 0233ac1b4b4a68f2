//! Retention end to end: a policy set through the API and the CLI, a run that expires old page
//! views (gone from the timeline and from every file under the data directory, Parquet
//! decoded), new events and identity kept, tags that read further back than the policy keeps
//! flagged, and bad policies refused with one clear line.

mod common;

use common::{add_source, all_text, portrait, Server, TOKEN};
use serde_json::json;

const KEY: &str = "web-write-key";
const OLD_REF: &str = "UNIQUE-OLD-REF-4242";
const NEW_REF: &str = "UNIQUE-NEW-REF-7777";
const OLD_ORDER: &str = "ORDER-OLD-KEPT-5151";

fn anywhere(data: &std::path::Path, needle: &str) -> Vec<String> {
    all_text(data)
        .into_iter()
        .filter(|(_, t)| t.contains(needle))
        .map(|(p, _)| p)
        .collect()
}

fn put(server: &Server, path: &str, body: &str) -> common::Response {
    server.request_as(Some(TOKEN), "PUT", path, body.as_bytes())
}

#[test]
fn old_events_expire_everywhere_new_ones_stay_and_tags_are_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    add_source(&data, "web", "web", KEY);
    let server = Server::start(&data, &[]);
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u-1", "anonymousId": "dev-1", "messageId": "id-1",
         "timestamp": "2023-01-01T00:00:00Z", "traits": {"level": "gold"}},
        {"type": "track", "anonymousId": "dev-1", "messageId": "pv-old", "event": "Page Viewed",
         "timestamp": "2023-01-02T00:00:00Z", "properties": {"ref": OLD_REF}},
        {"type": "track", "userId": "u-1", "messageId": "order-old", "event": "Order Completed",
         "timestamp": "2023-01-03T00:00:00Z", "properties": {"order": OLD_ORDER, "revenue": 10}},
        {"type": "track", "userId": "u-1", "messageId": "pv-new", "event": "Page Viewed",
         "timestamp": "2024-06-20T00:00:00Z", "properties": {"ref": NEW_REF}}
    ]});
    let r = server.ingest("/v1/batch", KEY, &batch.to_string());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let profile = server
        .admin_get("/api/v1/profiles/by-identifier/user_id/u-1")
        .json();
    let id = profile["id"].as_u64().expect("id");
    // A tag over all time, computed (so the events are in the lake too).
    let tags = "name: viewer\nrule: count(event = \"Page Viewed\") >= 1\n";
    let r = server.request_as(
        Some(TOKEN),
        "POST",
        "/api/v1/tags?publish=true",
        tags.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = server.admin_post("/api/v1/compute", r#"{"as_of": "2024-06-30T00:00:00Z"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        !anywhere(&data.join("lake"), OLD_REF).is_empty(),
        "the old event is in the lake"
    );

    // Bad policies: a 400 naming the rule, nothing written.
    for (body, says) in [
        (
            r#"{"rules": [{"type": "pageview", "days": 30}]}"#,
            "rule 1: unknown type `pageview`",
        ),
        (
            r#"{"rules": [{"event": "Page Viewed", "days": 0}]}"#,
            "rule 1: `days` must be between 1",
        ),
        (
            r#"{"rules": [{"event": "a", "days": 5}, {"source": "pos", "days": 30}]}"#,
            "rule 2: unknown source `pos`",
        ),
        (
            r#"{"rules": [{"days": 30}]}"#,
            "name an `event`, a `source` or a `type`",
        ),
        (
            r#"{"rules": [{"event": "a", "days": 5, "weeks": 1}]}"#,
            "unknown field `weeks`",
        ),
    ] {
        let r = put(&server, "/api/v1/retention", body);
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = r.json()["message"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    assert!(!data.join("retention.yaml").exists());
    assert_eq!(
        server.admin_get("/api/v1/retention").json()["rules"],
        json!([])
    );

    // A valid policy; the tag over all time is flagged.
    let r = put(
        &server,
        "/api/v1/retention",
        "rules:\n  - { event: Page Viewed, days: 400 }\n",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let warning = "reads \"Page Viewed\" over all time but it is kept 400 days";
    let policy = server.admin_get("/api/v1/retention").json();
    assert_eq!(
        policy["rules"],
        json!([{"event": "Page Viewed", "days": 400}])
    );
    assert_eq!(policy["flagged_tags"][0]["tag"], "viewer", "{policy}");
    assert_eq!(policy["flagged_tags"][0]["warnings"][0], warning);
    let tag = server.admin_get("/api/v1/tags/viewer").json();
    assert_eq!(tag["retention_warnings"], json!([warning]), "{tag}");

    // Apply at a fixed instant: the old page view goes, the rest stays.
    let r = server.admin_post("/api/v1/retention/apply", r#"{"as_of": "2024-06-30"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let run = r.json();
    assert_eq!(run["expired"], 1, "{run}");
    assert_eq!(run["rules"][0]["expired"], 1);
    assert_eq!(run["lake_rows"], 1);
    assert_eq!(run["status"], "completed");
    let again = server
        .admin_post("/api/v1/retention/apply", r#"{"as_of": "2024-06-30"}"#)
        .json();
    assert_eq!(again["expired"], 0, "idempotent: {again}");
    let bad = server.admin_post("/api/v1/retention/apply", r#"{"as_of": "yesterday"}"#);
    assert_eq!(bad.status, 400);

    let timeline = |server: &Server| {
        let t = server
            .admin_get(&format!("/api/v1/profiles/{id}/events"))
            .json();
        t["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["messageId"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(timeline(&server), vec!["pv-new", "order-old", "id-1"]);
    // Identity stays: the device the expired event came from still resolves to the person.
    let by_device = server
        .admin_get("/api/v1/profiles/by-identifier/anonymous_id/dev-1")
        .json();
    assert_eq!(by_device["id"].as_u64(), Some(id));
    // A client replaying the old event does not bring it back.
    let replay = json!({"batch": [batch["batch"][1].clone()]});
    let r = server.ingest("/v1/batch", KEY, &replay.to_string()).json();
    assert_eq!(r["accepted"], 0, "{r}");
    server.stop();

    assert_eq!(
        anywhere(&data, OLD_REF),
        Vec::<String>::new(),
        "the expired content is gone"
    );
    assert!(
        !anywhere(&data.join("lake"), NEW_REF).is_empty(),
        "the new event stays"
    );
    assert!(
        !anywhere(&data.join("lake"), OLD_ORDER).is_empty(),
        "no rule for orders"
    );

    // The CLI: show, bad rules refused with one line, apply (nothing left), tags flagged.
    let (ok, out, err) = portrait(&["retention", "show", "--data", d]);
    assert!(ok, "{err}");
    assert!(out.contains("\"Page Viewed\" events: 400 days"), "{out}");
    assert!(
        out.contains("last run") && out.contains("completed"),
        "{out}"
    );
    for (rule, says) in [
        (
            "type=pageview,days=3",
            "retention rule 1: unknown type `pageview`",
        ),
        (
            "source=nope,days=3",
            "retention rule 1: unknown source `nope` (sources: web)",
        ),
        ("event=Page Viewed,days=0", "`days` must be between 1"),
        ("weeks=3", "expected KEY=VALUE pairs"),
    ] {
        let (ok, _, err) = portrait(&["retention", "set", "--data", d, "--rule", rule]);
        assert!(!ok, "{rule} accepted");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{rule}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (ok, out, err) = portrait(&[
        "retention",
        "set",
        "--data",
        d,
        "--rule",
        "event=Page Viewed,days=400",
        "--rule",
        "source=web,type=track,days=600",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("events from source web: 600 days"), "{out}");
    let (ok, out, err) = portrait(&["retention", "apply", "--data", d, "--as-of", "2024-06-30"]);
    assert!(ok, "{err}");
    assert!(out.contains("expired 0 events"), "{out}");
    let (ok, out, err) = portrait(&["tags", "show", "--data", d, "viewer"]);
    assert!(ok, "{err}");
    assert!(out.contains(warning), "{out}");
    let file = dir.path().join("recent.yaml");
    std::fs::write(
        &file,
        "name: recent_viewer\nrule: count(event = \"Page Viewed\", within 500d) >= 1\n",
    )
    .expect("tag file");
    let (ok, _, err) = portrait(&["tags", "apply", "--data", d, file.to_str().expect("utf-8")]);
    assert!(ok, "a warning is not an error: {err}");
    assert!(
        err.contains(
            "tag `recent_viewer` reads \"Page Viewed\" over 500 days but it is kept 400 days"
        ),
        "{err}"
    );

    // After a restart the expired event is still out of the timeline.
    let server = Server::start(&data, &[]);
    assert_eq!(timeline(&server), vec!["pv-new", "order-old", "id-1"]);
    // New events compact after the expiry: the lake's counts agree with the store's.
    let more = json!({"batch": [{"type": "track", "userId": "u-1", "messageId": "pv-later",
        "event": "Page Viewed", "timestamp": "2024-06-25T00:00:00Z"}]});
    assert_eq!(
        server.ingest("/v1/batch", KEY, &more.to_string()).status,
        200
    );
    let r = server.admin_post("/api/v1/compute", r#"{"as_of": "2024-06-30T00:00:00Z"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let dist = server.admin_get("/api/v1/tags/viewer/distribution");
    assert_eq!(dist.status, 200, "{}", String::from_utf8_lossy(&dist.body));
}
