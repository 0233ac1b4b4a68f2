//! Erasure end to end: after `DELETE /api/v1/profiles/{id}` no file under the data directory
//! (Parquet decompressed) holds the person's identifiers or personal traits, and the person is
//! not re-created by a replayed event.

mod common;

use common::{add_source, all_text, portrait, Server};
use serde_json::json;

const KEY: &str = "app-write-key";

#[test]
fn an_erased_person_is_gone_from_every_file_and_stays_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "app", "app", KEY);
    let server = Server::start(&data, &[]);
    let person = |n: u32| {
        json!({"batch": [
            {"type": "identify", "userId": format!("vip-{n}"), "messageId": format!("i{n}"),
             "traits": {"phone": format!("1880000{n:04}"), "name": format!("赵六{n}"), "email": format!("z{n}@shop.cn")}},
            {"type": "track", "userId": format!("vip-{n}"), "messageId": format!("t{n}"), "event": "Order Completed",
             "properties": {"revenue": 120}}
        ]})
        .to_string()
    };
    for n in [1, 2] {
        assert_eq!(server.ingest("/v1/batch", KEY, &person(n)).status, 200);
    }
    let p1 = server
        .admin_get("/api/v1/profiles/by-identifier/user_id/vip-1")
        .json();
    let id = p1["id"].as_u64().expect("id");
    server.kill9();

    // The person also sits in the lake and in an import's reject file.
    let d = data.to_str().expect("utf-8");
    let (ok, _, err) = portrait(&["compact", "--data", d]);
    assert!(ok, "{err}");
    let mapping = dir.path().join("m.yaml");
    std::fs::write(&mapping, "kind: identify\nidentifiers: { phone: phone }\ntraits: { name: name }\ntimestamp: { column: t }\n").expect("mapping");
    // The input is the user's own file (outside DIR); its reject file is kept inside DIR.
    let csv = dir.path().join("crm.csv");
    let rejects = data.join("imports");
    std::fs::write(
        &csv,
        "phone,name,t\n188-0000-0001,赵六1,not a time\n18800000002,赵六2,2024-01-01 00:00:00\n",
    )
    .expect("csv");
    let m = mapping.to_str().expect("utf-8");
    let (ok, out, err) = portrait(&[
        "import",
        "--data",
        d,
        "--source",
        "app",
        "--mapping",
        m,
        "--rejects",
        rejects.to_str().expect("utf-8"),
        csv.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("1 rejected"), "{out}");
    let secrets = [
        "18800000001",
        "188-0000-0001",
        "赵六1",
        "z1@shop.cn",
        "vip-1",
    ];
    assert!(
        all_text(&data).iter().any(|(_, t)| t.contains("赵六1")),
        "the test data is where we look"
    );

    let server = Server::start(&data, &[]);
    let auth = format!("Bearer {}", common::TOKEN);
    let r = server.request(
        "DELETE",
        &format!("/api/v1/profiles/{id}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = r.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["events"], 2);
    assert!(done["lake_rows"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(done["reject_lines"], 1);
    let status = server.admin_get(&format!(
        "/api/v1/erasures/{}",
        done["id"].as_str().expect("id")
    ));
    assert_eq!(status.json()["status"], "completed");
    assert_eq!(
        server.admin_get(&format!("/api/v1/profiles/{id}")).status,
        404
    );

    // A client replaying the person's events does not bring them back.
    let again = server.ingest("/v1/batch", KEY, &person(1)).json();
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(
        server
            .admin_get("/api/v1/profiles/by-identifier/user_id/vip-1")
            .status,
        404
    );
    assert_eq!(
        server
            .admin_get("/api/v1/profiles/by-identifier/user_id/vip-2")
            .status,
        200
    );
    drop(server);

    for (path, text) in all_text(&data) {
        for s in secrets {
            assert!(!text.contains(s), "{path} still holds {s}");
        }
    }
    // The audit log keeps only the fact of the erasure.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).expect("audit");
    assert!(audit.contains("DELETE"), "{audit}");
}

#[test]
fn bulk_erasure_from_an_uploaded_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    add_source(&data, "app", "app", KEY);
    let server = Server::start(&data, &[]);
    let batch = json!({"batch": [
        {"type": "identify", "userId": "a", "messageId": "1", "traits": {"phone": "13900000001"}},
        {"type": "identify", "userId": "b", "messageId": "2", "traits": {"phone": "13900000002"}},
        {"type": "identify", "userId": "c", "messageId": "3", "traits": {"phone": "13900000003"}}
    ]});
    assert_eq!(
        server.ingest("/v1/batch", KEY, &batch.to_string()).status,
        200
    );
    let auth = format!("Bearer {}", common::TOKEN);
    let post = |body: &str| {
        server.request(
            "POST",
            "/api/v1/erasures",
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            body.as_bytes(),
        )
    };
    // A bad line refuses the whole file: nobody is erased.
    let r = post("phone:13900000001\nnot an identifier\n");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("line 2"));
    assert_eq!(
        server
            .admin_get("/api/v1/profiles/by-identifier/user_id/a")
            .status,
        200
    );

    let r =
        post("# 2024-06 deletion requests\nphone:13900000001\nuser_id:b\n\nphone:13911112222\n");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["erasures"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["not_found"], 1);
    for user in ["a", "b"] {
        let r = server.admin_get(&format!("/api/v1/profiles/by-identifier/user_id/{user}"));
        assert_eq!(r.status, 404, "{user} is erased");
    }
    assert_eq!(
        server
            .admin_get("/api/v1/profiles/by-identifier/user_id/c")
            .status,
        200
    );
    server.stop();
}
