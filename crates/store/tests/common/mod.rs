//! Shared helpers of the store's integration tests.

#![allow(dead_code)]

use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{IdentityConfig, Message};
use serde_json::Value;

/// A Segment message parsed as the HTTP edge would (source 1, a fixed receive time).
pub fn msg(v: Value) -> Message {
    let env = Envelope {
        source: 1,
        received_at: 1_700_000_000_000,
        ..Default::default()
    };
    parse_message(&v, &env, &IdentityConfig::default())
        .expect("valid message")
        .message
}
