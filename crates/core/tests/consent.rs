//! Consent through the profile book: decisions from events and traits, the latest by event
//! time wins, merges keep the latest per pair, and a grant lifts an erasure's suppression.

use portrait_core::consent::{ConsentState, CONSENT_EVENT};
use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{IdentityConfig, Message, ProfileBook};
use serde_json::{json, Value};

fn msg(v: Value) -> Message {
    let env = Envelope {
        source: 1,
        received_at: 1_717_000_000_000,
        ..Envelope::default()
    };
    parse_message(&v, &env, &IdentityConfig::default())
        .expect("valid message")
        .message
}

fn state(book: &ProfileBook, id: u32, key: &str) -> Option<ConsentState> {
    book.get(id)
        .and_then(|p| p.consent.get(key))
        .map(|r| r.state)
}

#[test]
fn latest_decision_by_event_time_wins_and_merges_keep_it() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let granted = msg(
        json!({"type": "track", "userId": "u1", "event": CONSENT_EVENT, "messageId": "c1",
        "timestamp": "2024-06-02T00:00:00Z", "properties": {"channel": "sms", "state": "granted"}}),
    );
    let older_denial = msg(
        json!({"type": "track", "userId": "u1", "event": CONSENT_EVENT, "messageId": "c0",
        "timestamp": "2024-06-01T00:00:00Z", "properties": {"channel": "sms", "state": "denied"}}),
    );
    let a = book.apply(&granted, 1).profile;
    book.apply(&older_denial, 2);
    assert_eq!(
        state(&book, a, "sms/marketing"),
        Some(ConsentState::Granted)
    );
    let record = &book.get(a).expect("live").consent["sms/marketing"];
    assert_eq!(
        record.message_id, "c1",
        "evidence is the message that decided"
    );

    // A second person, identified by phone, denies WeChat templates through a trait.
    let other = msg(
        json!({"type": "identify", "anonymousId": "a9", "messageId": "c2",
        "timestamp": "2024-06-03T00:00:00Z",
        "traits": {"phone": "13800001111", "consent": {"wechat_template": {"marketing": "denied"}}}}),
    );
    let b = book.apply(&other, 3).profile;
    assert_ne!(a, b);
    assert_eq!(
        state(&book, b, "wechat_template/marketing"),
        Some(ConsentState::Denied)
    );
    assert_eq!(
        state(&book, b, "sms/marketing"),
        None,
        "no decision is unknown"
    );

    // Linking them merges the decisions.
    let link = msg(
        json!({"type": "identify", "userId": "u1", "messageId": "c3",
        "timestamp": "2024-06-04T00:00:00Z", "traits": {"phone": "13800001111"}}),
    );
    let s = book.apply(&link, 4).profile;
    assert_eq!(
        state(&book, s, "sms/marketing"),
        Some(ConsentState::Granted)
    );
    assert_eq!(
        state(&book, s, "wechat_template/marketing"),
        Some(ConsentState::Denied)
    );
}

#[test]
fn a_grant_lifts_the_suppression_of_an_erased_person() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let first = msg(
        json!({"type": "track", "userId": "u7", "event": "Order Completed", "messageId": "e1"}),
    );
    let id = book.apply(&first, 1).profile;
    book.erase(id).expect("erase");
    let replayed = msg(
        json!({"type": "track", "userId": "u7", "event": "Order Completed", "messageId": "e2"}),
    );
    assert!(
        book.is_suppressed(&replayed),
        "an erased person is not re-created by a replay"
    );
    let again = msg(
        json!({"type": "track", "userId": "u7", "event": CONSENT_EVENT, "messageId": "e3",
        "properties": {"channel": "all", "purpose": "marketing", "state": "granted"}}),
    );
    assert!(!book.is_suppressed(&again));
    let back = book.apply(&again, 3).profile;
    assert_eq!(
        state(&book, back, "email/marketing"),
        Some(ConsentState::Granted)
    );
    assert!(
        !book.is_suppressed(&replayed),
        "consent given again lifts the suppression"
    );
}

#[test]
fn invalid_consent_is_refused_at_parse_with_the_field() {
    let env = Envelope {
        source: 1,
        received_at: 0,
        ..Envelope::default()
    };
    let bad = json!({"type": "track", "userId": "u1", "event": CONSENT_EVENT,
        "properties": {"channel": "sms", "purpose": "lottery", "state": "granted"}});
    let err = parse_message(&bad, &env, &IdentityConfig::default()).expect_err("refused");
    assert_eq!(err.field, "properties.purpose");
    assert!(err.reason.contains("lottery"));
}
