//! Consent end to end: decisions from a `Consent Updated` event, from the `consent` trait and
//! from the API land on the profile with their evidence; bad decisions are refused with the field;
//! a restart keeps them (they are ordinary events in the log).

mod common;

use common::{add_source, Server};
use serde_json::json;

const KEY: &str = "crm-write-key";

#[test]
fn consent_from_events_traits_and_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "crm", "crm", KEY);
    let server = Server::start(&data, &[]);
    let batch = json!({"batch": [
        {"type": "identify", "userId": "m-1", "messageId": "i1", "timestamp": "2024-06-01T00:00:00Z",
         "traits": {"phone": "13800001111", "consent": {"wechat_template": {"marketing": "denied"}}}},
        {"type": "track", "userId": "m-1", "messageId": "c1", "event": "Consent Updated",
         "timestamp": "2024-06-02T00:00:00Z",
         "properties": {"channel": "sms", "purpose": "marketing", "state": "granted"}}
    ]});
    assert_eq!(
        server.ingest("/v1/batch", KEY, &batch.to_string()).status,
        200
    );
    let p = server
        .admin_get("/api/v1/profiles/by-identifier/user_id/m-1")
        .json();
    let id = p["id"].as_u64().expect("id");
    assert_eq!(p["consent"]["sms/marketing"]["state"], "granted", "{p}");
    assert_eq!(p["consent"]["sms/marketing"]["evidence"], "c1");
    assert_eq!(p["consent"]["wechat_template/marketing"]["state"], "denied");
    assert!(
        p["consent"].get("call/service").is_none(),
        "no decision is unknown"
    );

    // A bad decision is refused whole, naming the field; nothing of the batch is stored.
    let bad = json!({"batch": [
        {"type": "track", "userId": "m-1", "messageId": "ok-1", "event": "Product Viewed"},
        {"type": "track", "userId": "m-1", "messageId": "c2", "event": "Consent Updated",
         "properties": {"channel": "fax", "state": "granted"}}
    ]});
    let r = server.ingest("/v1/batch", KEY, &bad.to_string());
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "properties.channel", "{}", r.json());
    assert_eq!(r.json()["index"], 1);

    // Through the API: withdraw SMS marketing.
    let r = server.admin_post(
        &format!("/api/v1/profiles/{id}/consent"),
        r#"{"channel": "sms", "state": "denied", "evidence": "客服工单 #8812"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["consent"]["sms/marketing"]["state"], "denied");
    let r = server.admin_post(
        &format!("/api/v1/profiles/{id}/consent"),
        r#"{"channel": "sms", "state": "perhaps"}"#,
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("state"));
    let r = server.admin_post(
        &format!("/api/v1/profiles/{id}/consent"),
        r#"{"channel": "sms", "state": "granted", "colour": 1}"#,
    );
    assert_eq!(r.status, 400, "unknown fields are refused");

    // Durable: after kill -9 and a restart the decisions are there.
    server.kill9();
    let server = Server::start(&data, &[]);
    let p = server.admin_get(&format!("/api/v1/profiles/{id}")).json();
    assert_eq!(p["consent"]["sms/marketing"]["state"], "denied", "{p}");
    assert_eq!(p["consent"]["wechat_template/marketing"]["state"], "denied");
    let events = server
        .admin_get(&format!("/api/v1/profiles/{id}/events"))
        .json();
    assert!(
        events.to_string().contains("Consent Updated"),
        "the decision is in the timeline"
    );
    server.stop();
}
