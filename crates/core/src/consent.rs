//! Consent per channel and purpose (PIPL: consent is given for a purpose, through a channel).
//!
//! A profile holds, per `(channel, purpose)`, the latest decision by event time: granted or
//! denied, with the source, the event time and the `messageId` of the message that set it (the
//! evidence). A pair with no decision is *unknown*. Decisions arrive as:
//! - a `track` event named [`CONSENT_EVENT`] (`Consent Updated`) with properties
//!   `{"channel": "sms", "purpose": "marketing", "state": "granted"}` (`purpose` defaults to
//!   `marketing`; `channel` may be `all`), or `{"consents": [{…}, …]}` for several at once;
//! - a `consent` trait (identify calls, CRM imports): `{"sms": {"marketing": "granted"}, "call":
//!   {"service": "denied"}}`.
//!
//! Anything else in those places is refused at ingest with the offending field named.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::{Message, MessageKind, SourceId};
use crate::time::Millis;

/// The event name that carries consent decisions.
pub const CONSENT_EVENT: &str = "Consent Updated";

/// The trait that carries consent decisions (`{channel: {purpose: state}}`).
pub const CONSENT_TRAIT: &str = "consent";

/// Channels consent is given for.
pub const CHANNELS: &[&str] = &["sms", "wechat_template", "app_push", "call", "email"];

/// Purposes consent is given for.
pub const PURPOSES: &[&str] = &["marketing", "service", "analytics"];

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentState {
    /// The person agreed.
    Granted,
    /// The person refused or withdrew.
    Denied,
}

impl ConsentState {
    /// `granted` / `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Granted => "granted",
            ConsentState::Denied => "denied",
        }
    }

    /// Parses `granted`/`denied` (also `true`/`false`, `yes`/`no`, `opt_in`/`opt_out`).
    pub fn parse(text: &str) -> Option<ConsentState> {
        match text.to_ascii_lowercase().as_str() {
            "granted" | "true" | "yes" | "opt_in" => Some(ConsentState::Granted),
            "denied" | "false" | "no" | "opt_out" | "withdrawn" => Some(ConsentState::Denied),
            _ => None,
        }
    }
}

/// One decision as read from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentUpdate {
    /// One of [`CHANNELS`].
    pub channel: &'static str,
    /// One of [`PURPOSES`].
    pub purpose: &'static str,
    /// The decision.
    pub state: ConsentState,
}

/// A decision held by a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// The decision.
    pub state: ConsentState,
    /// The source of the message that set it.
    pub source: SourceId,
    /// Its event time.
    pub at: Millis,
    /// Its `messageId`: the evidence.
    pub message_id: String,
}

/// The key of a `(channel, purpose)` pair in [`crate::Profile::consent`]: `sms/marketing`.
pub fn key(channel: &str, purpose: &str) -> String {
    format!("{channel}/{purpose}")
}

fn canonical(list: &'static [&'static str], text: &str) -> Option<&'static str> {
    list.iter().copied().find(|c| c.eq_ignore_ascii_case(text))
}

/// A consent problem: the JSON path of the field and why.
pub type ConsentError = (String, String);

fn one(
    obj: &Map<String, Value>,
    at: &str,
    out: &mut Vec<ConsentUpdate>,
) -> Result<(), ConsentError> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let channel = text("channel").ok_or_else(|| {
        (
            format!("{at}.channel"),
            format!("is required: one of {}, or all", CHANNELS.join(", ")),
        )
    })?;
    let purpose = text("purpose").unwrap_or("marketing");
    let state = match obj.get("state") {
        Some(Value::String(s)) => ConsentState::parse(s),
        Some(Value::Bool(b)) => Some(if *b {
            ConsentState::Granted
        } else {
            ConsentState::Denied
        }),
        _ => None,
    }
    .ok_or_else(|| {
        (
            format!("{at}.state"),
            "must be granted or denied".to_string(),
        )
    })?;
    let purpose = canonical(PURPOSES, purpose).ok_or_else(|| {
        (
            format!("{at}.purpose"),
            format!(
                "unknown purpose `{purpose}`: one of {}",
                PURPOSES.join(", ")
            ),
        )
    })?;
    if channel.eq_ignore_ascii_case("all") {
        out.extend(CHANNELS.iter().map(|c| ConsentUpdate {
            channel: c,
            purpose,
            state,
        }));
        return Ok(());
    }
    let channel = canonical(CHANNELS, channel).ok_or_else(|| {
        (
            format!("{at}.channel"),
            format!(
                "unknown channel `{channel}`: one of {}, or all",
                CHANNELS.join(", ")
            ),
        )
    })?;
    out.push(ConsentUpdate {
        channel,
        purpose,
        state,
    });
    Ok(())
}

/// The decisions a message carries (none for most messages). `properties` and `traits` are the
/// message's parsed objects.
pub fn updates(
    kind: MessageKind,
    event: Option<&str>,
    properties: &Map<String, Value>,
    traits: &Map<String, Value>,
) -> Result<Vec<ConsentUpdate>, ConsentError> {
    let mut out = Vec::new();
    if kind == MessageKind::Track && event == Some(CONSENT_EVENT) {
        match properties.get("consents") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("properties.consents[{i}]");
                    let obj = item
                        .as_object()
                        .ok_or_else(|| (at.clone(), "must be an object".to_string()))?;
                    one(obj, &at, &mut out)?;
                }
            }
            Some(_) => return Err(("properties.consents".into(), "must be an array".into())),
            None => one(properties, "properties", &mut out)?,
        }
    }
    match traits.get(CONSENT_TRAIT) {
        None | Some(Value::Null) => {}
        Some(Value::Object(channels)) => {
            for (channel, purposes) in channels {
                let at = format!("traits.consent.{channel}");
                let purposes = purposes.as_object().ok_or_else(|| {
                    (
                        at.clone(),
                        "must be an object of purpose → granted/denied".to_string(),
                    )
                })?;
                for (purpose, state) in purposes {
                    let mut obj = Map::new();
                    obj.insert("channel".into(), Value::String(channel.clone()));
                    obj.insert("purpose".into(), Value::String(purpose.clone()));
                    obj.insert("state".into(), state.clone());
                    one(&obj, &at, &mut out)?;
                }
            }
        }
        Some(_) => return Err(("traits.consent".into(), "must be an object".into())),
    }
    Ok(out)
}

/// The decisions of a stored message (already validated at ingest; invalid ones are skipped).
pub fn message_updates(msg: &Message) -> Vec<ConsentUpdate> {
    let consent_event =
        msg.kind == MessageKind::Track && msg.event.as_deref() == Some(CONSENT_EVENT);
    if !consent_event && !msg.traits.contains("\"consent\"") {
        return Vec::new();
    }
    let props = if consent_event {
        msg.properties_map()
    } else {
        Map::new()
    };
    updates(msg.kind, msg.event.as_deref(), &props, &msg.traits_map()).unwrap_or_default()
}

/// True when the message grants something: it lifts an erasure's suppression of its identifiers
/// (the person gave consent again).
pub fn grants(msg: &Message) -> bool {
    message_updates(msg)
        .iter()
        .any(|u| u.state == ConsentState::Granted)
}

/// The later of two decisions for the same pair (event time, then the later message wins ties).
pub fn newer(new: &ConsentRecord, old: &ConsentRecord) -> bool {
    new.at >= old.at
}

/// Makes consent readable by tag rules and audiences as `traits.consent.<channel>.<purpose>`
/// (`"granted"`/`"denied"`; absent = unknown): the profile's consent decisions, from every
/// source (events, the consent trait, the API), replace whatever `consent` trait was sent.
pub fn overlay<'a>(
    traits: &mut serde_json::Map<String, serde_json::Value>,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) {
    let mut tree = serde_json::Map::new();
    for (key, state) in pairs {
        let Some((channel, purpose)) = key.split_once('/') else {
            continue;
        };
        let entry = tree
            .entry(channel.to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(m) = entry {
            m.insert(
                purpose.to_string(),
                serde_json::Value::String(state.to_string()),
            );
        }
    }
    traits.insert("consent".into(), serde_json::Value::Object(tree));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn event_traits_and_errors() {
        let u = updates(
            MessageKind::Track,
            Some(CONSENT_EVENT),
            &obj(json!({"channel": "SMS", "state": "granted"})),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(
            u,
            vec![ConsentUpdate {
                channel: "sms",
                purpose: "marketing",
                state: ConsentState::Granted
            }]
        );
        let all = updates(
            MessageKind::Track,
            Some(CONSENT_EVENT),
            &obj(json!({"channel": "all", "purpose": "service", "state": false})),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(all.len(), CHANNELS.len());
        let t = updates(
            MessageKind::Identify,
            None,
            &Map::new(),
            &obj(json!({"consent": {"wechat_template": {"marketing": "denied"}}})),
        )
        .unwrap();
        assert_eq!(t[0].channel, "wechat_template");
        assert_eq!(t[0].state, ConsentState::Denied);
        let e = updates(
            MessageKind::Track,
            Some(CONSENT_EVENT),
            &obj(json!({"channel": "fax", "state": "granted"})),
            &Map::new(),
        )
        .unwrap_err();
        assert_eq!(e.0, "properties.channel");
        let e = updates(
            MessageKind::Track,
            Some(CONSENT_EVENT),
            &obj(json!({"consents": [{"channel": "sms", "state": "maybe"}]})),
            &Map::new(),
        )
        .unwrap_err();
        assert_eq!(e.0, "properties.consents[0].state");
        // Other events are not consent.
        assert!(updates(
            MessageKind::Track,
            Some("Order Completed"),
            &obj(json!({"channel": "fax"})),
            &Map::new()
        )
        .unwrap()
        .is_empty());
    }
}
