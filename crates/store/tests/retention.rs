//! Retention: expired events lose their content in the log, leave the timeline, and the state
//! rebuilt from the log (with or without a snapshot, or after a crash mid-expiry) is the state
//! the expiry left.

mod common;

use common::msg;
use portrait_core::{Identifier, Message, Profile};
use portrait_store::retention::Policy;
use portrait_store::{Engine, EngineOptions, SourceKind};
use serde_json::json;

const OLD: &str = "2023-01-01T08:00:00Z";
const NEWER: &str = "2024-06-20T08:00:00Z";
const AS_OF: &str = "2024-06-30T00:00:00Z";

fn as_of() -> i64 {
    portrait_core::time::parse_iso(AS_OF).expect("as_of")
}

fn messages() -> Vec<Message> {
    vec![
        // Alice: an old identify (her name is still current, her tier is not), old page views,
        // an old order (no rule matches it) and recent activity.
        msg(
            json!({"type": "identify", "messageId": "a-id-old", "userId": "alice", "timestamp": OLD,
                   "traits": {"name": "Alice Current-Name", "tier": "bronze-SUPERSEDED"}}),
        ),
        msg(
            json!({"type": "track", "messageId": "a-pv-old", "userId": "alice", "timestamp": OLD,
                   "event": "Page Viewed", "properties": {"path": "/OLD-SECRET-PATH-123"},
                   "context": {"ip": "10.9.8.7"}}),
        ),
        msg(
            json!({"type": "track", "messageId": "a-order-old", "userId": "alice", "timestamp": OLD,
                   "event": "Order Completed", "properties": {"order": "ORDER-OLD-789"}}),
        ),
        msg(
            json!({"type": "identify", "messageId": "a-id-new", "userId": "alice", "timestamp": NEWER,
                   "traits": {"tier": "gold"}}),
        ),
        msg(
            json!({"type": "track", "messageId": "a-pv-new", "userId": "alice", "timestamp": NEWER,
                   "event": "Page Viewed", "properties": {"path": "/NEW-PATH-456"}}),
        ),
        // Carol: the only message joining her user id and device is old; later messages carry
        // one each. Expiring it must not split her profile.
        msg(
            json!({"type": "page", "messageId": "c-link-old", "userId": "carol", "anonymousId": "dev-carol",
                   "timestamp": OLD, "name": "Home", "properties": {"path": "/CAROL-OLD-PAGE"},
                   "context": {"traits": {"email": "carol@old.example"}}}),
        ),
        msg(
            json!({"type": "track", "messageId": "c-new-1", "userId": "carol", "timestamp": NEWER,
                   "event": "Signed In"}),
        ),
        msg(
            json!({"type": "track", "messageId": "c-new-2", "anonymousId": "dev-carol", "timestamp": NEWER,
                   "event": "Page Viewed", "properties": {"path": "/carol-new"}}),
        ),
        // A consent decision past every period stays (it is evidence).
        msg(
            json!({"type": "track", "messageId": "c-consent-old", "userId": "carol", "timestamp": OLD,
                   "event": "Consent Updated", "properties": {"channel": "sms", "state": "granted"}}),
        ),
    ]
}

const POLICY: &str = "rules:\n  - { event: Page Viewed, days: 400 }\n  - { type: identify, days: 365 }\n  - { type: page, days: 180 }\n  - { source: web, type: track, days: 500 }\n";

/// Everything replay must reproduce.
#[derive(Debug, PartialEq)]
struct Observed {
    profiles: Vec<Profile>,
    redirects: Vec<(u32, u32)>,
    expired: Vec<(u32, Vec<u64>)>,
    stats: String,
    identifiers: usize,
}

fn observe(engine: &Engine) -> Observed {
    let state = engine.state();
    let profiles: Vec<Profile> = state.book.profiles().cloned().collect();
    let expired = profiles
        .iter()
        .map(|p| (p.id, state.book.expired_events(p.id).to_vec()))
        .collect();
    Observed {
        redirects: state.book.redirects().collect(),
        expired,
        stats: serde_json::to_string(&state.stats).expect("stats"),
        identifiers: state.book.identifiers(),
        profiles,
    }
}

fn holds(dir: &std::path::Path, needle: &str) -> bool {
    common::all_bytes(dir)
        .iter()
        .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

fn profile_of(engine: &Engine, kind: &str, value: &str) -> u32 {
    engine
        .state()
        .book
        .by_identifier(&Identifier::new(kind, value))
        .expect("profile")
}

fn timeline_ids(engine: &Engine, profile: u32) -> Vec<String> {
    let (events, _) = engine
        .timeline(profile, 0, 100)
        .expect("timeline")
        .expect("profile");
    events.into_iter().map(|(_, m)| m.message_id).collect()
}

/// A data directory with the messages ingested and a snapshot written (source 1 is `web`).
fn populated(dir: &std::path::Path) {
    let engine = Engine::open(dir, EngineOptions::default()).expect("open");
    let web = engine
        .sources_mut()
        .add("web", SourceKind::Web, None)
        .expect("web");
    assert_eq!(web.id, 1, "the test messages come from source 1");
    engine.ingest(messages()).expect("ingest");
    engine.snapshot().expect("snapshot");
}

fn expire(engine: &Engine) -> portrait_store::retention::ExpiryReport {
    let policy = Policy::parse(POLICY).expect("policy");
    let matcher = policy.matcher(&engine.sources()).expect("valid");
    engine.expire(&matcher, as_of()).expect("expire")
}

#[test]
fn expired_content_leaves_the_log_and_the_timeline_and_replay_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    let alice = profile_of(&engine, "user_id", "alice");
    let carol = profile_of(&engine, "user_id", "carol");
    assert_eq!(profile_of(&engine, "anonymous_id", "dev-carol"), carol);
    let traits_before = engine
        .state()
        .book
        .get(alice)
        .expect("alice")
        .traits
        .clone();
    let events_before = engine.state().stats.events;

    let report = expire(&engine);
    // a-id-old (identify, 365d), a-pv-old (Page Viewed, 400d), c-link-old (page, 180d);
    // a-order-old matches `source: web, type: track` (500d) and is older than that too.
    assert_eq!(report.expired, 4, "{report:?}");
    let per_rule: Vec<u64> = report.rules.iter().map(|r| r.expired).collect();
    assert_eq!(per_rule, vec![1, 1, 1, 1]);
    assert_eq!(report.consent_kept, 1, "the old consent decision stays");
    assert_eq!(report.offsets.len(), 4);
    assert_eq!(engine.state().stats.events, events_before - 4);

    assert_eq!(timeline_ids(&engine, alice), vec!["a-pv-new", "a-id-new"]);
    assert_eq!(
        timeline_ids(&engine, carol),
        vec!["c-new-2", "c-new-1", "c-consent-old"]
    );
    {
        let state = engine.state();
        let a = state.book.get(alice).expect("alice");
        assert_eq!(
            a.traits, traits_before,
            "the profile's traits do not change"
        );
        assert_eq!(a.events.len(), 2);
        assert_eq!(state.book.expired_events(alice).len(), 3);
    }
    // Identity links stay: Carol is still one profile.
    assert_eq!(profile_of(&engine, "anonymous_id", "dev-carol"), carol);

    // Idempotent.
    assert_eq!(expire(&engine).expired, 0);
    let after = observe(&engine);
    drop(engine);

    // The expired content is in no file; what was not expired is.
    for gone in [
        "OLD-SECRET-PATH-123",
        "10.9.8.7",
        "CAROL-OLD-PAGE",
        "bronze-SUPERSEDED",
        "ORDER-OLD-789",
    ] {
        assert!(!holds(dir.path(), gone), "{gone} is still on disk");
    }
    for kept in ["NEW-PATH-456", "Alice Current-Name", "alice", "dev-carol"] {
        assert!(holds(dir.path(), kept), "{kept} should be kept");
    }

    // Restart from the snapshot, then from the log alone: the same state.
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("reopen");
    assert_eq!(observe(&engine), after, "restart from the snapshot");
    drop(engine);
    std::fs::remove_file(dir.path().join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("replay");
    assert_eq!(observe(&engine), after, "replay of the whole log");
    assert_eq!(timeline_ids(&engine, alice), vec!["a-pv-new", "a-id-new"]);
    assert_eq!(
        expire(&engine).expired,
        0,
        "still idempotent after a restart"
    );
    // Deduplication still knows an expired message after the replay.
    let again = engine
        .ingest(vec![messages().remove(1)])
        .expect("ingest again");
    assert_eq!((again.accepted, again.duplicates), (0, 1));

    // Erasing a person also destroys their expired events.
    let erased = engine.erase(alice).expect("erase");
    assert_eq!(erased.events.len(), 5);
    drop(engine);
    assert!(!holds(dir.path(), "Alice Current-Name"));
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("after erase");
    assert!(engine
        .state()
        .book
        .by_identifier(&Identifier::new("user_id", "alice"))
        .is_none());
}

/// A crash after the `Expire` record was synced but before any record was shortened: the next
/// start finishes the expiry.
#[test]
fn a_crash_mid_expiry_is_finished_at_the_next_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let before = root.path().join("before");
    let done = root.path().join("done");
    populated(&before);
    copy_dir(&before, &done);
    let after = {
        let engine = Engine::open(&done, EngineOptions::default()).expect("open");
        assert_eq!(expire(&engine).expired, 4);
        observe(&engine)
    };
    // The crashed directory: the log as before the expiry plus the `Expire` record the expiry
    // appended, and the snapshot from before.
    let segment = std::path::Path::new("log").join(format!("{:020}.log", 0));
    let old_log = std::fs::read(before.join(&segment)).expect("old log");
    let new_log = std::fs::read(done.join(&segment)).expect("new log");
    assert!(
        new_log.len() > old_log.len(),
        "an Expire record was appended"
    );
    let crashed = root.path().join("crashed");
    copy_dir(&before, &crashed);
    let mut log = old_log.clone();
    log.extend_from_slice(&new_log[old_log.len()..]);
    std::fs::write(crashed.join(&segment), log).expect("write log");
    assert!(holds(&crashed, "OLD-SECRET-PATH-123"));

    let engine = Engine::open(&crashed, EngineOptions::default()).expect("recover");
    assert_eq!(
        observe(&engine),
        after,
        "the recovered state is the expired state"
    );
    drop(engine);
    assert!(!holds(&crashed, "OLD-SECRET-PATH-123"));
    assert!(!holds(&crashed, "CAROL-OLD-PAGE"));
    std::fs::remove_file(crashed.join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(&crashed, EngineOptions::default()).expect("replay");
    assert_eq!(
        observe(&engine),
        after,
        "and so is the replay of the whole log"
    );
}

/// An unmerge after an expiry replays the expired events as expired: the parts keep the
/// identifiers only expired events linked.
#[test]
fn unmerge_after_expiry_keeps_links_of_expired_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path());
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    expire(&engine);
    let carol = profile_of(&engine, "user_id", "carol");
    let parts = engine
        .unmerge(carol, Identifier::new("anonymous_id", "dev-carol"))
        .expect("unmerge");
    assert_eq!(parts.len(), 2, "{parts:?}");
    let after = observe(&engine);
    let carol_now = profile_of(&engine, "user_id", "carol");
    assert_eq!(
        profile_of(&engine, "email", "carol@old.example"),
        carol_now,
        "an identifier only an expired event carried still links"
    );
    assert_ne!(profile_of(&engine, "anonymous_id", "dev-carol"), carol_now);
    assert_eq!(
        timeline_ids(&engine, carol_now),
        vec!["c-new-1", "c-consent-old"]
    );
    drop(engine);
    std::fs::remove_file(dir.path().join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("replay");
    assert_eq!(observe(&engine), after);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let target = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &target);
        } else if p.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}

/// Encrypted records: the shortened record is encrypted too, survives a key rotation and a
/// restart.
#[test]
fn expiry_in_an_encrypted_directory_survives_rotation() {
    use portrait_store::crypto::{Keyring, MasterKey};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let master = MasterKey::generate();
    let opts = || EngineOptions {
        keyring: Some(Arc::new(
            Keyring::open_or_create(&data, master.clone()).expect("keyring"),
        )),
        ..Default::default()
    };
    let after = {
        let engine = Engine::open(&data, opts()).expect("open");
        engine
            .sources_mut()
            .add("web", SourceKind::Web, None)
            .expect("web");
        engine.ingest(messages()).expect("ingest");
        assert_eq!(expire(&engine).expired, 4);
        engine.rotate_data_key().expect("rotate");
        let alice = profile_of(&engine, "user_id", "alice");
        assert_eq!(timeline_ids(&engine, alice), vec!["a-pv-new", "a-id-new"]);
        observe(&engine)
    };
    std::fs::remove_file(data.join("snapshot.bin")).expect("rm snapshot");
    let engine = Engine::open(&data, opts()).expect("replay");
    assert_eq!(observe(&engine), after);
}
