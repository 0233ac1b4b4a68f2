//! The event model: one validated message, as stored in the event log.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Dense id of a source (a channel that sends data: CRM, WeChat, POS, …).
pub type SourceId = u32;

/// The Segment call a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Who the person is: traits.
    Identify,
    /// What they did: an event with properties.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// Membership of an account or group.
    Group,
    /// Links a previous id to a new one.
    Alias,
}

impl MessageKind {
    /// Parses the Segment `type` field (`identify`, `track`, …).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "identify" => Self::Identify,
            "track" => Self::Track,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            _ => return None,
        })
    }

    /// The Segment name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }
}

/// One identifier of a person, normalised: `phone:+8613800000000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// Identifier type name (`phone`, `member_id`, `wechat_openid`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Normalised value. Scoped types carry their scope as a prefix: `wx_app_1:oAbc…`.
    pub value: String,
}

impl Identifier {
    /// Builds an identifier from its parts.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Parses `type:value` as typed on a command line.
    pub fn parse_pair(text: &str) -> Option<Self> {
        let (kind, value) = text.split_once(':')?;
        (!kind.is_empty() && !value.is_empty()).then(|| Self::new(kind, value))
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A validated message, the unit of the event log.
///
/// JSON payloads (`traits`, `properties`, `context`) are kept as JSON text so the record
/// serialises compactly and round-trips exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Segment call.
    pub kind: MessageKind,
    /// Client-chosen id used for deduplication per source.
    pub message_id: String,
    /// Source the message arrived through.
    pub source: SourceId,
    /// `track` event name, or `page`/`screen` name.
    pub event: Option<String>,
    /// Segment `userId`.
    pub user_id: Option<String>,
    /// Segment `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `alias`: the previous id.
    pub previous_id: Option<String>,
    /// `group`: the group id.
    pub group_id: Option<String>,
    /// Event time after clock-skew correction: what windows and `as_of` use.
    pub timestamp: Millis,
    /// When Portrait received the message.
    pub received_at: Millis,
    /// When the client sent it, by the client's clock.
    pub sent_at: Option<Millis>,
    /// When the event happened, by the client's clock.
    pub original_timestamp: Option<Millis>,
    /// Traits object as JSON text (`{}` when absent).
    pub traits: String,
    /// Properties object as JSON text (`{}` when absent).
    pub properties: String,
    /// Context object as JSON text (`{}` when absent).
    pub context: String,
    /// Normalised, unblocked identifiers extracted from the message, in priority order.
    pub identifiers: Vec<Identifier>,
}

impl Message {
    /// The traits as a JSON object (empty when the stored text is not an object).
    pub fn traits_map(&self) -> serde_json::Map<String, serde_json::Value> {
        crate::json::object(&self.traits)
    }

    /// The properties as a JSON object.
    pub fn properties_map(&self) -> serde_json::Map<String, serde_json::Value> {
        crate::json::object(&self.properties)
    }

    /// The message as Segment-shaped JSON, as shown in a profile's timeline.
    pub fn to_json(&self, source_name: &str) -> serde_json::Value {
        use crate::time::format_iso;
        let mut out = serde_json::Map::new();
        out.insert("type".into(), self.kind.as_str().into());
        if let Some(event) = &self.event {
            let key = if self.kind == MessageKind::Track {
                "event"
            } else {
                "name"
            };
            out.insert(key.into(), event.clone().into());
        }
        out.insert("messageId".into(), self.message_id.clone().into());
        out.insert("source".into(), source_name.into());
        for (key, value) in [
            ("userId", &self.user_id),
            ("anonymousId", &self.anonymous_id),
            ("previousId", &self.previous_id),
            ("groupId", &self.group_id),
        ] {
            if let Some(value) = value {
                out.insert(key.into(), value.clone().into());
            }
        }
        out.insert("timestamp".into(), format_iso(self.timestamp).into());
        out.insert("receivedAt".into(), format_iso(self.received_at).into());
        if let Some(t) = self.sent_at {
            out.insert("sentAt".into(), format_iso(t).into());
        }
        if let Some(t) = self.original_timestamp {
            out.insert("originalTimestamp".into(), format_iso(t).into());
        }
        out.insert("traits".into(), self.traits_map().into());
        out.insert("properties".into(), self.properties_map().into());
        out.insert("context".into(), crate::json::object(&self.context).into());
        out.insert(
            "identifiers".into(),
            serde_json::to_value(&self.identifiers).unwrap_or_default(),
        );
        serde_json::Value::Object(out)
    }
}
