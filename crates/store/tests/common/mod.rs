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

/// Every byte of every file under `dir`.
pub fn all_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}
