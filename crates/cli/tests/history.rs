//! Tag history end to end: every computation leaves a snapshot for its date, transitions
//! between two dates come out of the CLI as the JSON the scripts rely on and from the API, and a
//! backfill computes past dates from the lake.

mod common;

use common::{add_source, portrait, Server};
use serde_json::{json, Value};

const KEY: &str = "pos-write-key";

const TAGS: &str = r#"
name: stage
kind: stage
cases:
  - dormant: days_since(last(event = "Order Completed")) > 30
  - active: count(event = "Order Completed") >= 1
  - prospect: true
"#;

#[test]
fn transitions_between_computed_dates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "pos", "pos", KEY);
    // a: buys on 05-20 (active on 06-01, dormant by 07-15); b: buys 05-25 and 07-10 (active,
    // active); c: first order 07-01 (prospect → active); d: never buys (prospect, prospect).
    let order = |u: &str, ts: &str| {
        json!({"type": "track", "userId": u, "messageId": format!("{u}-{ts}"),
        "event": "Order Completed", "timestamp": ts, "properties": {"revenue": 100}})
    };
    let batch = json!({"batch": [
        order("a", "2024-05-20T10:00:00Z"), order("b", "2024-05-25T10:00:00Z"),
        order("b", "2024-07-10T10:00:00Z"), order("c", "2024-07-01T10:00:00Z"),
        {"type": "identify", "userId": "c", "messageId": "c-id", "timestamp": "2024-05-01T00:00:00Z"},
        {"type": "identify", "userId": "d", "messageId": "d-id", "timestamp": "2024-05-01T00:00:00Z"}
    ]});
    let server = Server::start(&data, &[]);
    assert_eq!(
        server.ingest("/v1/batch", KEY, &batch.to_string()).status,
        200
    );
    server.stop();
    let d = data.to_str().expect("utf-8");
    let tags = dir.path().join("stage.yaml");
    std::fs::write(&tags, TAGS).expect("write");
    let (ok, _, err) = portrait(&[
        "tags",
        "apply",
        "--data",
        d,
        "--publish",
        tags.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    for day in ["2024-06-01", "2024-07-15"] {
        let (ok, _, err) = portrait(&["compute", "--data", d, "--as-of", day]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = portrait(&[
        "history",
        "transitions",
        "--data",
        d,
        "--tag",
        "stage",
        "--from",
        "2024-06-01",
        "--to",
        "2024-07-15",
        "--json",
    ]);
    assert!(ok, "{err}");
    let cells: Vec<Value> = serde_json::from_str(&out).expect("a JSON array");
    let count = |from: &str, to: &str| {
        cells
            .iter()
            .find(|c| c["from"] == from && c["to"] == to)
            .and_then(|c| c["count"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(count("active", "dormant"), 1, "{out}");
    assert_eq!(count("active", "active"), 1, "{out}");
    assert_eq!(count("prospect", "active"), 1, "{out}");
    assert_eq!(count("prospect", "prospect"), 1, "{out}");
    assert_eq!(
        cells
            .iter()
            .filter_map(|c| c["count"].as_u64())
            .sum::<u64>(),
        4
    );

    // A backfill of days never computed live.
    let (ok, _, err) = portrait(&[
        "history",
        "backfill",
        "--data",
        d,
        "--from",
        "2024-06-20",
        "--to",
        "2024-06-22",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = portrait(&[
        "history",
        "transitions",
        "--data",
        d,
        "--tag",
        "stage",
        "--from",
        "2024-06-20",
        "--to",
        "2024-06-22",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"from\""), "{out}");

    // The same through the API.
    let server = Server::start(&data, &[]);
    let r = server.admin_get("/api/v1/history/stage/transitions?from=2024-06-01&to=2024-07-15");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json().to_string().contains("dormant"), "{}", r.json());
    let r = server.admin_get("/api/v1/history/stage/transitions?from=2023-01-01&to=2024-07-15");
    assert!(
        r.status >= 400 && r.status < 500,
        "no snapshot that day: {}",
        r.status
    );
    server.stop();
}
