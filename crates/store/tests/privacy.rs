//! Erasure and encryption at rest: what the files on disk hold afterwards.

use std::sync::Arc;

use portrait_core::{Identifier, Message};
mod common;

use common::msg;
use portrait_store::crypto::{Keyring, MasterKey};
use portrait_store::{Engine, EngineOptions};
use serde_json::json;

fn person(n: u32) -> Vec<Message> {
    vec![
        msg(
            json!({"type": "identify", "messageId": format!("i{n}"), "userId": format!("member-{n}"),
                   "traits": {"phone": format!("1390000{n:04}"), "name": format!("王小{n}"), "email": format!("p{n}@example.cn")}}),
        ),
        msg(
            json!({"type": "track", "messageId": format!("t{n}"), "userId": format!("member-{n}"),
                   "event": "Order Completed", "properties": {"revenue": 99}}),
        ),
    ]
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn erasure_destroys_events_profile_and_snapshot_and_suppresses_the_person() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EngineOptions::default();
    let (id, id2);
    {
        let engine = Engine::open(dir.path(), opts.clone()).expect("open");
        engine.ingest(person(1)).expect("ingest");
        engine.ingest(person(2)).expect("ingest");
        engine.snapshot().expect("snapshot");
        id = engine
            .state()
            .book
            .by_identifier(&Identifier::new("user_id", "member-1"))
            .expect("p1");
        id2 = engine
            .state()
            .book
            .by_identifier(&Identifier::new("user_id", "member-2"))
            .expect("p2");
        let report = engine.erase(id).expect("erase");
        assert_eq!(report.events.len(), 2);
        assert!(engine.state().book.get(id).is_none());
        assert_eq!(engine.state().stats.events, 2);
        // The person is not silently re-created by a replayed event.
        let again = engine.ingest(person(1)).expect("ingest");
        assert_eq!(again.accepted, 0);
        assert_eq!(again.duplicates + again.suppressed, 2);
        let new_msg =
            msg(json!({"type": "track", "messageId": "new", "userId": "member-1", "event": "E"}));
        assert_eq!(engine.ingest(vec![new_msg]).expect("ingest").suppressed, 1);
        assert!(engine.erase(id).is_err(), "already erased");
    }
    for (path, bytes) in common::all_bytes(dir.path()) {
        for secret in ["13900000001", "王小1", "p1@example.cn", "member-1"] {
            assert!(!contains(&bytes, secret), "{path} still holds {secret}");
        }
    }
    // The other person is intact; a restart from the log alone keeps the erasure.
    std::fs::remove_file(dir.path().join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(dir.path(), opts).expect("reopen");
    let state = engine.state();
    assert_eq!(
        state
            .book
            .by_identifier(&Identifier::new("user_id", "member-2")),
        Some(id2),
        "profile ids are stable when state is rebuilt from the log"
    );
    assert!(state
        .book
        .by_identifier(&Identifier::new("user_id", "member-1"))
        .is_none());
    assert!(state.book.suppressed() >= 3);
    assert_eq!(state.stats.events, 2);
}

#[test]
fn encrypted_data_directory_holds_no_plaintext_and_needs_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let master = MasterKey::generate();
    let ring = || Arc::new(Keyring::open_or_create(&data, master.clone()).expect("keyring"));
    let opts = || EngineOptions {
        keyring: Some(ring()),
        ..Default::default()
    };
    {
        let engine = Engine::open(&data, opts()).expect("open");
        engine.ingest(person(7)).expect("ingest");
        engine.snapshot().expect("snapshot");
    }
    for (path, bytes) in common::all_bytes(&data) {
        for plain in [
            "13900000007",
            "王小7",
            "p7@example.cn",
            "member-7",
            "Order Completed",
        ] {
            assert!(!contains(&bytes, plain), "{path} holds {plain} in clear");
        }
    }
    let err = Engine::open(&data, EngineOptions::default())
        .err()
        .expect("needs the key");
    assert!(err.to_string().contains("encrypted"), "{err}");
    assert!(
        Keyring::open_or_create(&data, MasterKey::generate()).is_err(),
        "wrong master key"
    );
    // Rotate the data key: everything is re-encrypted in place and still readable.
    {
        let engine = Engine::open(&data, opts()).expect("reopen");
        let rewritten = engine.rotate_data_key().expect("rotate");
        assert_eq!(rewritten, 2);
        let id = engine
            .state()
            .book
            .by_identifier(&Identifier::new("user_id", "member-7"))
            .expect("p7");
        let (events, _) = engine
            .timeline(id, 0, 10)
            .expect("timeline")
            .expect("profile");
        assert_eq!(events.len(), 2);
    }
    std::fs::remove_file(data.join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(&data, opts()).expect("reopen after rotation");
    assert!(engine
        .state()
        .book
        .by_identifier(&Identifier::new("phone", "+8613900000007"))
        .is_some());
}
