//! Segment message parsing, per message, as the ingest API does it.
//!
//! - `loadgen_track` / `loadgen_identify`: the messages `portrait-loadgen` sends (small, no
//!   context).
//! - `sdk_track`: a track call as a browser SDK sends it, with a full `context` (library, page,
//!   user agent, campaign, locale, …) — most of its bytes are context Portrait stores but does not
//!   read while parsing.
//!
//! Each is measured from the message's JSON text to a validated [`Message`], both through
//! `parse_message_text` (what the server runs) and through a `serde_json::Value` parse followed by
//! `parse_message` (what callers holding a `Value` run).
//!
//! [`Message`]: portrait_core::message::Message

use std::hint::black_box;

use mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use portrait_core::identity::IdentityConfig;
use portrait_core::segment::{parse_message, parse_message_text, Envelope};

/// The `portrait` binary's allocator.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const LOADGEN_TRACK: &str = r#"{"type":"track","messageId":"s1-1234567","anonymousId":"anon-48213","event":"Product Viewed","timestamp":"2026-11-29T08:00:00.000Z","properties":{"sku":"SKU-4567","price":199.0,"revenue":373.0,"category":"美妆"}}"#;
const LOADGEN_IDENTIFY: &str = r#"{"type":"identify","messageId":"s1-1234568","userId":"user-48213","anonymousId":"anon-48213","traits":{"phone":"13800048213","city":"上海","level":"gold"},"timestamp":"2026-11-29T08:00:00.000Z"}"#;
const SDK_TRACK: &str = r#"{
  "type": "track", "event": "Order Completed", "userId": "u-20391", "anonymousId": "5b1f0a0c-8c2e-4c57-9c55-1f0d5b7e2a11",
  "messageId": "ajs-next-1732867200000-8a3c1e2f-77b4-4d0e-bc3a-9f1e4d2c6b5a",
  "properties": {"order_id": "SO-2026112900123", "revenue": 458.5, "currency": "CNY", "coupon": "双十一",
    "products": [{"sku": "SKU-1001", "name": "保湿面霜", "price": 229.25, "quantity": 2, "category": "美妆"}]},
  "context": {
    "library": {"name": "analytics.js", "version": "next-1.70.0"},
    "page": {"path": "/checkout/success", "referrer": "https://shop.example.cn/cart", "search": "?from=wechat",
      "title": "支付成功", "url": "https://shop.example.cn/checkout/success?from=wechat"},
    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50",
    "locale": "zh-CN", "timezone": "Asia/Shanghai", "ip": "203.0.113.7",
    "campaign": {"name": "双十一", "source": "wechat", "medium": "social"},
    "device": {"id": "d-7f3a", "type": "ios", "model": "iPhone15,2"},
    "traits": {"email": "li.wei@example.cn"}
  },
  "originalTimestamp": "2026-11-29T08:00:00.120Z", "sentAt": "2026-11-29T08:00:00.250Z",
  "integrations": {}, "writeKey": "wk-app"
}"#;

fn segment(c: &mut Criterion) {
    let config = IdentityConfig::default();
    let env = Envelope {
        received_at: 1_795_000_000_000,
        ..Envelope::default()
    };
    for (name, text) in [
        ("loadgen_track", LOADGEN_TRACK),
        ("loadgen_identify", LOADGEN_IDENTIFY),
        ("sdk_track", SDK_TRACK),
    ] {
        c.bench_function(&format!("{name}/text"), |b| {
            b.iter(|| parse_message_text(black_box(text), &env, &config).expect("valid"))
        });
        c.bench_function(&format!("{name}/value"), |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_str(black_box(text)).expect("json");
                parse_message(&v, &env, &config).expect("valid")
            })
        });
    }
}

/// The benchmark group (a module so the macro's undocumented function can be allowed).
mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, segment);
}
criterion_main!(group::benches);
