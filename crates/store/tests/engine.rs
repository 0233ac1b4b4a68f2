//! Engine behaviour: durability across reopen, dedup, snapshots, merges and unmerge.

use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{Identifier, Message};
mod common;

use common::msg;
use portrait_store::{Engine, EngineOptions};
use serde_json::{json, Value};

fn identify(mid: &str, user: &str, traits: Value) -> Message {
    msg(
        json!({"type": "identify", "messageId": mid, "userId": user, "traits": traits,
               "timestamp": "2024-01-01T00:00:00Z"}),
    )
}

fn track(mid: &str, anon: &str, event: &str, ts: &str) -> Message {
    msg(
        json!({"type": "track", "messageId": mid, "anonymousId": anon, "event": event,
               "timestamp": ts}),
    )
}

fn phone(p: &str) -> Identifier {
    Identifier::new("phone", p)
}

#[test]
fn dedup_merge_and_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EngineOptions {
        snapshot_every: 3,
        ..Default::default()
    };
    let merged_id;
    {
        let engine = Engine::open(dir.path(), opts.clone()).expect("open");
        let r = engine
            .ingest(vec![
                identify("m1", "u1", json!({"phone": "13800001111", "name": "李雷"})),
                track("m2", "a1", "Product Viewed", "2024-01-02T00:00:00Z"),
            ])
            .expect("ingest");
        assert_eq!((r.accepted, r.duplicates), (2, 0));
        assert_eq!(engine.state().book.live(), 2);
        // The anonymous visitor logs in: the two profiles merge.
        let login = msg(
            json!({"type": "identify", "messageId": "m3", "userId": "u1",
                               "anonymousId": "a1", "timestamp": "2024-01-03T00:00:00Z"}),
        );
        let r = engine.ingest(vec![login.clone(), login]).expect("ingest");
        assert_eq!((r.accepted, r.duplicates), (1, 1));
        let state = engine.state();
        assert_eq!(state.book.live(), 1);
        merged_id = state
            .book
            .by_identifier(&phone("+8613800001111"))
            .expect("by phone");
        let p = state.book.get(merged_id).expect("profile");
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.history.len(), 1);
        drop(state);
        // A retry of the first batch changes nothing.
        let r = engine
            .ingest(vec![identify(
                "m1",
                "u1",
                json!({"phone": "13800001111", "name": "李雷"}),
            )])
            .expect("ingest");
        assert_eq!((r.accepted, r.duplicates), (0, 1));
    }
    // Reopen: snapshot + log replay give the same state, and dedup still holds.
    let engine = Engine::open(dir.path(), opts).expect("reopen");
    let state = engine.state();
    assert_eq!(state.book.live(), 1);
    assert_eq!(state.stats.events, 3);
    let p = state.book.get(merged_id).expect("profile");
    assert_eq!(p.traits["name"].value, "\"李雷\"");
    drop(state);
    let r = engine.ingest(vec![track(
        "m2",
        "a1",
        "Product Viewed",
        "2024-01-02T00:00:00Z",
    )]);
    assert_eq!(r.expect("ingest").duplicates, 1);
    let (page, more) = engine
        .timeline(merged_id, 0, 2)
        .expect("timeline")
        .expect("exists");
    assert!(more);
    assert_eq!(page[0].1.message_id, "m3", "newest first");
}

#[test]
fn unmerge_splits_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EngineOptions {
        snapshot_every: 1_000_000,
        ..Default::default()
    };
    let (a, b);
    {
        let engine = Engine::open(dir.path(), opts.clone()).expect("open");
        // Two people share a typo'd email; it wrongly joins them.
        engine
            .ingest(vec![
                msg(json!({"type": "identify", "messageId": "1", "anonymousId": "alice",
                           "traits": {"email": "x@y.cn"}})),
                msg(json!({"type": "identify", "messageId": "2", "anonymousId": "bob",
                           "traits": {"phone": "13900002222"}})),
                msg(json!({"type": "track", "messageId": "3", "anonymousId": "bob", "event": "Signed Up",
                           "context": {"traits": {"email": "x@y.cn", "phone": "13900002222"}}})),
            ])
            .expect("ingest");
        let state = engine.state();
        assert_eq!(state.book.live(), 1);
        let id = state
            .book
            .by_identifier(&Identifier::new("anonymous_id", "alice"))
            .expect("alice");
        drop(state);
        let parts = engine
            .unmerge(id, Identifier::new("email", "x@y.cn"))
            .expect("unmerge");
        assert_eq!(parts.len(), 2, "{parts:?}");
        let state = engine.state();
        a = state
            .book
            .by_identifier(&Identifier::new("anonymous_id", "alice"))
            .expect("alice");
        b = state
            .book
            .by_identifier(&Identifier::new("anonymous_id", "bob"))
            .expect("bob");
        assert_ne!(a, b);
        assert_eq!(state.book.by_identifier(&phone("+8613900002222")), Some(b));
        assert!(engine
            .unmerge(a, Identifier::new("phone", "+8600000"))
            .is_err());
    }
    // Replayed from the log alone (the snapshot is removed) the split holds.
    std::fs::remove_file(dir.path().join("snapshot.bin")).expect("remove snapshot");
    let engine = Engine::open(dir.path(), opts).expect("reopen");
    let state = engine.state();
    assert_eq!(
        state
            .book
            .by_identifier(&Identifier::new("anonymous_id", "alice")),
        Some(a)
    );
    assert_eq!(
        state
            .book
            .by_identifier(&Identifier::new("anonymous_id", "bob")),
        Some(b)
    );
    assert_eq!(state.stats.unmerges, 1);
}

#[test]
fn second_process_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    let err = Engine::open(dir.path(), EngineOptions::default())
        .err()
        .expect("locked");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn identity_yaml_in_the_data_directory_configures_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("identity.yaml"),
        "types:\n  - { name: user_id, limit: 1 }\n  - { name: member_id, limit: 1, traits: [会员号] }\n  - { name: anonymous_id, limit: 5 }\nblocked: [\"test.*\"]\n",
    )
    .expect("write config");
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    let config = engine.identity();
    assert_eq!(config.types.len(), 3);
    let parsed = parse_message(
        &json!({"type": "identify", "userId": "TEST-1", "anonymousId": "a", "traits": {"会员号": "M9"}}),
        &Envelope { source: 1, received_at: 0, ..Default::default() },
        config,
    )
    .expect("valid");
    let ids: Vec<String> = parsed
        .message
        .identifiers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ids,
        ["member_id:M9", "anonymous_id:a"],
        "test user id blocked by pattern"
    );
    drop(engine);
    std::fs::write(
        dir.path().join("identity.yaml"),
        "types: [{ name: x, limit: 0 }]\n",
    )
    .expect("write");
    let err = Engine::open(dir.path(), EngineOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("identity.yaml"), "{err}");
}

#[test]
fn a_full_queue_sheds_load_with_busy_and_loses_nothing_accepted() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            queue: 1,
            ..Default::default()
        },
    )
    .expect("open");
    let done = Arc::new(AtomicUsize::new(0));
    let (mut accepted, mut busy) = (0usize, 0usize);
    // Build every batch first so the submits come back to back, faster than the committer.
    let one = track("x", "a", "Viewed", "2024-01-01T00:00:00Z");
    let batches: Vec<Vec<Message>> = (0..200)
        .map(|job| {
            (0..500)
                .map(|i| {
                    let mut m = one.clone();
                    m.message_id = format!("{job}-{i}");
                    m
                })
                .collect()
        })
        .collect();
    for batch in batches {
        let done = done.clone();
        match engine.submit(batch, move |r| {
            done.fetch_add(r.expect("stored").accepted, Ordering::SeqCst);
        }) {
            Ok(()) => accepted += 500,
            Err(portrait_store::StoreError::Busy) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy > 0, "a queue of one job never filled");
    engine.snapshot().expect("drain");
    assert_eq!(done.load(Ordering::SeqCst), accepted);
    assert_eq!(engine.state().stats.events as usize, accepted);
}

/// Every live profile as `(id, identifiers, traits, events)`, sorted, for comparisons.
fn book_summary(engine: &Engine) -> Vec<String> {
    let state = engine.state();
    let mut out: Vec<String> = state
        .book
        .profiles()
        .map(|p| format!("{} {:?} {:?} {:?}", p.id, p.identifiers, p.traits, p.events))
        .collect();
    out.sort();
    out
}

#[test]
fn background_snapshots_taken_while_profiles_change_reopen_to_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EngineOptions {
        snapshot_every: 40,
        ..Default::default()
    };
    let engine = Engine::open(dir.path(), opts.clone()).expect("open");
    // 30 groups of 20 messages over 25 people: snapshots every 40 records are captured while
    // later groups change the same profiles (copy on write) and add dedup keys.
    let mut n = 0;
    for round in 0..30 {
        let mut group = Vec::new();
        for k in 0..20 {
            n += 1;
            let user = format!("u{}", (round * 7 + k) % 25);
            group.push(identify(
                &format!("m{n}"),
                &user,
                json!({"visits": n, "tier": format!("t{}", round % 3)}),
            ));
        }
        let r = engine.ingest(group).expect("ingest");
        assert_eq!(r.accepted, 20);
    }
    // Let the last background snapshot land (it cannot be awaited from outside; waiting only
    // makes the copy below start from a newer snapshot).
    let snap = dir.path().join("snapshot.bin");
    let mut last = None;
    for _ in 0..50 {
        let now = std::fs::metadata(&snap)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if now.is_some() && now == last {
            break;
        }
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A copy of the directory as a crash would leave it: the snapshot written in the
    // background plus the log after it.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(dir.path(), copy.path());
    let want = book_summary(&engine);
    assert_eq!(want.len(), 25);
    let reopened = Engine::open(copy.path(), opts).expect("reopen the copy");
    // The snapshot was read (an unreadable one is rebuilt from the whole log).
    assert!(
        reopened.replayed_at_open() < 600,
        "{}",
        reopened.replayed_at_open()
    );
    assert_eq!(book_summary(&reopened), want);
    assert_eq!(reopened.state().stats.events, 600);
    // Dedup knows every key: from before any snapshot, sealed in one, and after the last.
    for mid in ["m1", "m300", "m599", "m600"] {
        let r = reopened
            .ingest(vec![identify(mid, "u0", json!({"visits": 0}))])
            .expect("ingest");
        assert_eq!((r.accepted, r.duplicates), (0, 1), "{mid}");
    }
    let r = reopened
        .ingest(vec![identify("m601", "u0", json!({"visits": 601}))])
        .expect("ingest");
    assert_eq!(r.accepted, 1);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
