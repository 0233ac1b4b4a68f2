//! Parsing Segment Tracking API messages into [`Message`]s.
//!
//! Follows the Segment HTTP Tracking API: `userId` or `anonymousId` is required, `track` needs
//! `event`, `alias` needs `previousId` and `userId`, `group` needs `groupId`. Traits come from
//! `traits` and `context.traits` (the top-level object wins on a clash). Event time:
//! with `originalTimestamp` it is `receivedAt − (sentAt − originalTimestamp)` (clock-skew
//! correction); otherwise an explicit `timestamp` is taken as is; otherwise `receivedAt`.
//!
//! Identifiers are read from `userId` (`user_id`), `anonymousId` and `previousId`
//! (`anonymous_id`), `context.device.id` (`device_id`), `context.externalIds`
//! (`[{id, type, collection}]`, `collection` scoping types such as `wechat_openid`), and the
//! trait keys each identifier type lists. Blocked or malformed values are dropped and reported
//! in [`Parsed::dropped`]; a message left with no identifier at all is refused.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::identity::IdentityConfig;
use crate::json::{self, Kind};
use crate::message::{Message, MessageKind, SourceId};
use crate::time::{parse_iso, Millis};

/// What a message is refused for: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    /// JSON path of the offending field (`userId`, `context.traits`, …).
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Request-level facts a message is parsed with.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    /// Source the request authenticated as.
    pub source: SourceId,
    /// Server receive time.
    pub received_at: Millis,
    /// Batch-level `sentAt`, if any.
    pub sent_at: Option<Millis>,
    /// Batch-level `context` (a JSON object's text), merged under each message's own.
    pub context: Option<&'a str>,
    /// Kind implied by the endpoint (`/v1/track`), used when the message has no `type`.
    pub kind: Option<MessageKind>,
}

/// A parsed message plus the identifier values it carried that were not usable.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The message.
    pub message: Message,
    /// Values dropped as blocked or malformed: `(type, raw value, reason)`.
    pub dropped: Vec<(String, String, &'static str)>,
}

/// The top-level fields a message is read from; others (`integrations`, `channel`, …) are
/// skipped.
const FIELDS: [&str; 16] = [
    "type",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "name",
    "category",
    "messageId",
    "sentAt",
    "originalTimestamp",
    "timestamp",
    "writeKey",
    "properties",
    "traits",
    "context",
];

/// Index of a field in [`FIELDS`].
#[derive(Debug, Clone, Copy)]
enum F {
    Type,
    UserId,
    AnonymousId,
    PreviousId,
    GroupId,
    Event,
    Name,
    Category,
    MessageId,
    SentAt,
    OriginalTimestamp,
    Timestamp,
    WriteKey,
    Properties,
    Traits,
    Context,
}

/// A message's top-level fields, borrowed from its JSON text: the first, cheap step of
/// parsing, enough to read the write key before the request is authenticated.
#[derive(Debug, Clone)]
pub struct RawMessage<'a> {
    text: &'a str,
    /// False when the text is JSON but not an object.
    object: bool,
    fields: [Option<&'a RawValue>; FIELDS.len()],
}

impl<'a> RawMessage<'a> {
    /// Reads a message's top-level fields; an error only when the text is not valid JSON.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut fields = [None; FIELDS.len()];
        let object = json::pick_into(text, &FIELDS, &mut fields)?;
        Ok(RawMessage {
            text,
            object,
            fields,
        })
    }

    /// The `writeKey` field, when it is a string.
    pub fn write_key(&self) -> Option<Cow<'a, str>> {
        self.get(F::WriteKey).and_then(json::string)
    }

    fn get(&self, f: F) -> Option<&'a RawValue> {
        self.fields[f as usize]
    }

    /// The field's value unless absent or `null`.
    fn present(&self, f: F) -> Option<&'a RawValue> {
        self.get(f).filter(|v| Kind::of(v) != Kind::Null)
    }
}

/// Parses and validates one message held as a [`Value`] (the same rules as
/// [`parse_message_text`], which the ingest API runs on the request's text).
pub fn parse_message(
    value: &Value,
    env: &Envelope<'_>,
    config: &IdentityConfig,
) -> Result<Parsed, FieldError> {
    parse_message_text(&value.to_string(), env, config)
}

/// Parses and validates one message from its JSON text.
pub fn parse_message_text(
    text: &str,
    env: &Envelope<'_>,
    config: &IdentityConfig,
) -> Result<Parsed, FieldError> {
    let raw =
        RawMessage::parse(text).map_err(|e| FieldError::new("", format!("not valid JSON: {e}")))?;
    parse_raw_message(&raw, env, config)
}

/// Validates a message whose top-level fields were read with [`RawMessage::parse`] and builds
/// it: identifiers extracted and normalised, event time corrected for clock skew, `traits`,
/// `properties` and `context` stored as compact JSON text.
pub fn parse_raw_message(
    top: &RawMessage<'_>,
    env: &Envelope<'_>,
    config: &IdentityConfig,
) -> Result<Parsed, FieldError> {
    if !top.object {
        return Err(FieldError::new("", "message must be a JSON object"));
    }
    let kind = match top.get(F::Type) {
        Some(t) => {
            let t = json::string(t).ok_or_else(|| FieldError::new("type", "must be a string"))?;
            MessageKind::parse(&t)
                .ok_or_else(|| FieldError::new("type", format!("unknown message type `{t}`")))?
        }
        None => env
            .kind
            .ok_or_else(|| FieldError::new("type", "is required in a batch"))?,
    };
    let user_id = id_field(top, F::UserId)?;
    let anonymous_id = id_field(top, F::AnonymousId)?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(FieldError::new(
            "userId",
            "userId or anonymousId is required",
        ));
    }
    let previous_id = id_field(top, F::PreviousId)?;
    let group_id = id_field(top, F::GroupId)?;
    let event = match kind {
        MessageKind::Track => Some(
            string_field(top, F::Event)?
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| FieldError::new("event", "is required for track"))?,
        ),
        MessageKind::Page | MessageKind::Screen => string_field(top, F::Name)?,
        _ => None,
    };
    match kind {
        MessageKind::Alias if previous_id.is_none() => {
            return Err(FieldError::new("previousId", "is required for alias"))
        }
        MessageKind::Alias if user_id.is_none() => {
            return Err(FieldError::new("userId", "is required for alias"))
        }
        MessageKind::Group if group_id.is_none() => {
            return Err(FieldError::new("groupId", "is required for group"))
        }
        _ => {}
    }

    // Objects stay text; they are parsed into maps only to be merged (rare).
    let context = merged(env.context, object_field(top, F::Context)?);
    let [context_traits, device, external] = picked(&context, ["traits", "device", "externalIds"]);
    let context_traits = json::object_or_null(context_traits)
        .map_err(|_| FieldError::new("context.traits", "must be an object"))?;
    // A group call's `traits` describe the group, not the person: they are kept as the event's
    // properties, and only `context.traits` reach the profile.
    let own_traits = object_field(top, F::Traits)?.filter(|_| kind != MessageKind::Group);
    let traits = merged(context_traits, own_traits);
    let mut properties = Cow::Borrowed(object_field(top, F::Properties)?.unwrap_or("{}"));
    let extra: Option<(&str, Value)> = match kind {
        MessageKind::Group => object_field(top, F::Traits)?
            .filter(|t| !json::is_empty_object(t))
            .map(|t| ("group_traits", Value::Object(json::object(t)))),
        MessageKind::Page | MessageKind::Screen => {
            string_field(top, F::Category)?.map(|c| ("category", Value::String(c)))
        }
        _ => None,
    };
    if let Some((k, v)) = extra {
        let [existing] = picked(&properties, [k]);
        if existing.is_none() {
            let mut m = json::object(&properties);
            m.insert(k.to_string(), v);
            properties = Cow::Owned(Value::Object(m).to_string());
        }
    }

    // Consent: the whole properties of a consent event, and the `consent` trait.
    let consent_event =
        kind == MessageKind::Track && event.as_deref() == Some(crate::consent::CONSENT_EVENT);
    let consent_properties = if consent_event {
        json::object(&properties)
    } else {
        serde_json::Map::new()
    };
    let trait_keys = identifier_trait_keys(config);
    let trait_values = json::pick(&traits, &trait_keys)
        .ok()
        .flatten()
        .unwrap_or_default();
    // Values in the order of `identifier_trait_keys`: consent first, then per type.
    let mut trait_values = trait_values.into_iter().chain(std::iter::repeat(None));
    let mut consent_traits = serde_json::Map::new();
    if let Some(c) = trait_values.next().flatten() {
        let c = serde_json::from_str(c.get()).unwrap_or(Value::Null);
        consent_traits.insert(crate::consent::CONSENT_TRAIT.into(), c);
    }
    crate::consent::updates(kind, event.as_deref(), &consent_properties, &consent_traits)
        .map_err(|(field, reason)| FieldError::new(&field, reason))?;

    let received_at = env.received_at;
    let sent_at = time_field(top, F::SentAt)?.or(env.sent_at);
    let original_timestamp = time_field(top, F::OriginalTimestamp)?;
    let explicit = time_field(top, F::Timestamp)?;
    let timestamp = match (original_timestamp, sent_at, explicit) {
        (Some(orig), Some(sent), _) => received_at - (sent - orig),
        (Some(orig), None, _) => orig,
        (None, _, Some(ts)) => ts,
        (None, _, None) => received_at,
    };

    let message_id = match top.present(F::MessageId) {
        Some(v) => match Kind::of(v) {
            Kind::String => json::string(v)
                .filter(|s| !s.trim().is_empty())
                .map(Cow::into_owned),
            Kind::Number => json::scalar_text(v),
            _ => None,
        }
        .ok_or_else(|| FieldError::new("messageId", "must be a string"))?,
        // Derived from the content as serde_json writes it, so that the same message sent
        // twice, however it is spaced, gets the same id.
        None => {
            let value: Value = serde_json::from_str(top.text).unwrap_or(Value::Null);
            format!(
                "h-{:032x}",
                xxhash_rust::xxh3::xxh3_128(value.to_string().as_bytes())
            )
        }
    };

    let mut ids = Vec::new();
    let mut dropped = Vec::new();
    let mut push = |kind: &str, raw: &str, scope: Option<&str>| {
        if config.rank(kind).is_none() {
            return;
        }
        match config.identifier(kind, raw, scope) {
            Ok(id) => ids.push(id),
            Err(reason) => dropped.push((kind.to_string(), raw.to_string(), reason)),
        }
    };
    if let Some(u) = &user_id {
        push("user_id", u, None);
    }
    if let Some(a) = &anonymous_id {
        push("anonymous_id", a, None);
    }
    if let Some(p) = &previous_id {
        push("anonymous_id", p, None);
    }
    if let Some(device) = device.filter(|d| Kind::of(d) == Kind::Object) {
        let [id] = picked(device.get(), ["id"]);
        if let Some(id) = id.and_then(json::scalar_text) {
            push("device_id", &id, None);
        }
    }
    if let Some(external) = external {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(external.get()) else {
            return Err(FieldError::new("context.externalIds", "must be an array"));
        };
        for (i, item) in items.iter().enumerate() {
            let [id, kind, collection] = picked(item.get(), ["id", "type", "collection"]);
            let id = id.and_then(json::scalar_text);
            let kind = kind.and_then(json::string);
            let (Some(id), Some(kind)) = (id, kind) else {
                return Err(FieldError::new(
                    &format!("context.externalIds[{i}]"),
                    "needs string `id` and `type`",
                ));
            };
            let scoped = config
                .rank(&kind)
                .is_some_and(|r| config.type_at(r).scope_trait.is_some());
            let scope = collection.and_then(json::string).filter(|_| scoped);
            push(&kind, &id, scope.as_deref());
        }
    }
    for t in &config.types {
        let scope = match t.scope_trait {
            Some(_) => trait_values.next().flatten().and_then(json::scalar_text),
            None => None,
        };
        for _ in &t.traits {
            if let Some(raw) = trait_values.next().flatten().and_then(json::scalar_text) {
                push(&t.name, &raw, scope.as_deref());
            }
        }
    }
    config.sort(&mut ids);
    if ids.is_empty() {
        let detail = dropped
            .iter()
            .map(|(k, v, why)| format!("{k} `{v}`: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(FieldError::new(
            if user_id.is_some() {
                "userId"
            } else {
                "anonymousId"
            },
            format!("no usable identifier ({detail})"),
        ));
    }

    let message = Message {
        kind,
        message_id,
        source: env.source,
        event,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        timestamp,
        received_at,
        sent_at,
        original_timestamp,
        traits: json::compact(&traits).into_owned(),
        properties: json::compact(&properties).into_owned(),
        context: json::compact(&context).into_owned(),
        identifiers: ids,
    };
    Ok(Parsed { message, dropped })
}

/// The trait keys consent and identifiers are read from: [`CONSENT_TRAIT`], then per
/// identifier type its scope trait (if any) and its trait keys, in the order of
/// `config.types`.
///
/// [`CONSENT_TRAIT`]: crate::consent::CONSENT_TRAIT
fn identifier_trait_keys(config: &IdentityConfig) -> Vec<&str> {
    let mut keys = vec![crate::consent::CONSENT_TRAIT];
    for t in &config.types {
        keys.extend(t.scope_trait.as_deref());
        keys.extend(t.traits.iter().map(String::as_str));
    }
    keys
}

/// An object's text with `over`'s entries merged over `under`'s (borrowed when only one is
/// there; `{}` when neither is).
fn merged<'a>(under: Option<&'a str>, over: Option<&'a str>) -> Cow<'a, str> {
    match (under, over) {
        (Some(under), Some(over)) => {
            let mut m = json::object(under);
            m.extend(json::object(over));
            Cow::Owned(Value::Object(m).to_string())
        }
        (Some(only), None) | (None, Some(only)) => Cow::Borrowed(only),
        (None, None) => Cow::Borrowed("{}"),
    }
}

/// The listed entries of an object's text (all `None` when it is not an object).
fn picked<'a, const N: usize>(text: &'a str, keys: [&str; N]) -> [Option<&'a RawValue>; N] {
    let mut out = [None; N];
    if !matches!(json::pick_into(text, &keys, &mut out), Ok(true)) {
        out = [None; N];
    }
    out
}

fn field_error(f: F, reason: &str) -> FieldError {
    FieldError::new(FIELDS[f as usize], reason)
}

fn id_field(top: &RawMessage<'_>, f: F) -> Result<Option<String>, FieldError> {
    let Some(v) = top.present(f) else {
        return Ok(None);
    };
    match Kind::of(v) {
        Kind::String | Kind::Number => Ok(json::scalar_text(v).filter(|s| !s.is_empty())),
        _ => Err(field_error(f, "must be a string or a number")),
    }
}

fn string_field(top: &RawMessage<'_>, f: F) -> Result<Option<String>, FieldError> {
    top.present(f)
        .map(|v| {
            json::string(v)
                .map(Cow::into_owned)
                .ok_or_else(|| field_error(f, "must be a string"))
        })
        .transpose()
}

fn object_field<'a>(top: &RawMessage<'a>, f: F) -> Result<Option<&'a str>, FieldError> {
    json::object_or_null(top.get(f)).map_err(|_| field_error(f, "must be an object"))
}

fn time_field(top: &RawMessage<'_>, f: F) -> Result<Option<Millis>, FieldError> {
    let Some(v) = top.present(f) else {
        return Ok(None);
    };
    let s = json::string(v).ok_or_else(|| field_error(f, "must be an ISO-8601 string"))?;
    parse_iso(&s)
        .map(Some)
        .ok_or_else(|| field_error(f, &format!("`{s}` is not an ISO-8601 timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Envelope<'static> {
        Envelope {
            source: 1,
            received_at: 1_700_000_010_000,
            ..Default::default()
        }
    }

    fn parse(v: Value) -> Result<Parsed, FieldError> {
        parse_message(&v, &env(), &IdentityConfig::default())
    }

    #[test]
    fn track_with_context_traits_and_skew() {
        let p = parse(json!({
            "type": "track", "event": "Product Viewed", "anonymousId": "a-1",
            "messageId": "m1",
            "originalTimestamp": "2023-11-14T22:13:25.000Z",
            "sentAt": "2023-11-14T22:13:30.000Z",
            "context": {"traits": {"phone": "138-0000-1234", "email": "A@B.cn"}},
            "properties": {"sku": "X1"}
        }))
        .expect("valid");
        let m = p.message;
        // receivedAt − (sentAt − originalTimestamp) = received − 5 s
        assert_eq!(m.timestamp, 1_700_000_005_000);
        let ids: Vec<String> = m.identifiers.iter().map(ToString::to_string).collect();
        assert_eq!(
            ids,
            ["phone:+8613800001234", "email:a@b.cn", "anonymous_id:a-1"]
        );
        assert_eq!(m.event.as_deref(), Some("Product Viewed"));
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |v: Value| parse(v).expect_err("should fail").field;
        assert_eq!(err(json!({"type": "track", "event": "x"})), "userId");
        assert_eq!(err(json!({"type": "track", "userId": "u"})), "event");
        assert_eq!(
            err(json!({"type": "track", "event": "x", "userId": {"a": 1}})),
            "userId"
        );
        assert_eq!(
            err(json!({"type": "identify", "userId": "u", "timestamp": "soon"})),
            "timestamp"
        );
        assert_eq!(
            err(json!({"type": "identify", "userId": "u", "traits": [1]})),
            "traits"
        );
        assert_eq!(err(json!({"type": "yell", "userId": "u"})), "type");
        assert_eq!(
            err(json!({"type": "identify", "userId": "undefined"})),
            "userId"
        );
        assert_eq!(err(json!({"type": "alias", "userId": "u"})), "previousId");
    }

    #[test]
    fn scoped_openid_and_external_ids() {
        let p = parse(json!({
            "type": "identify", "userId": "u1",
            "traits": {"wechat_openid": "oX1", "wechat_appid": "wxA"},
            "context": {"externalIds": [{"id": "oY2", "type": "wechat_openid", "collection": "wxB"}]}
        }))
        .expect("valid");
        let ids: Vec<String> = p
            .message
            .identifiers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ids,
            [
                "user_id:u1",
                "wechat_openid:wxA:oX1",
                "wechat_openid:wxB:oY2"
            ]
        );
    }

    #[test]
    fn group_traits_stay_with_the_event_and_page_category_is_kept() {
        let g = parse(json!({
            "type": "group", "userId": "alice", "groupId": "acme",
            "traits": {"name": "Acme Inc", "email": "info@acme.com"}
        }))
        .expect("valid")
        .message;
        assert_eq!(g.traits, "{}");
        assert_eq!(
            g.identifiers.len(),
            1,
            "the group's email is not the person's identifier"
        );
        assert_eq!(g.properties_map()["group_traits"]["name"], "Acme Inc");
        let p =
            parse(json!({"type": "page", "userId": "a", "name": "Checkout", "category": "Shop"}))
                .expect("valid")
                .message;
        assert_eq!(p.properties_map()["category"], "Shop");
    }

    #[test]
    fn missing_message_id_is_derived_from_content() {
        let v = json!({"type": "identify", "userId": "u1", "timestamp": "2024-01-01T00:00:00Z"});
        let a = parse(v.clone()).expect("valid").message.message_id;
        let b = parse(v).expect("valid").message.message_id;
        assert_eq!(a, b);
    }

    /// JSON text of a value with spaces and newlines between tokens and every non-ASCII
    /// character and `/` escaped, as some SDKs write it.
    fn spelt_out(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if c == '/' || !c.is_ascii() || c.is_ascii_control() => {
                            let mut units = [0u16; 2];
                            for u in c.encode_utf16(&mut units) {
                                out.push_str(&format!("\\u{u:04x}"));
                            }
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Value::Array(items) => {
                out.push_str("[ ");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" ,\n ");
                    }
                    spelt_out(item, out);
                }
                out.push_str(" ]");
            }
            Value::Object(m) => {
                out.push_str("{\n\t");
                for (i, (k, item)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\r\n ");
                    }
                    spelt_out(&Value::String(k.clone()), out);
                    out.push_str(" : ");
                    spelt_out(item, out);
                }
                out.push_str("\n}");
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn spacing_and_escapes_do_not_change_the_message() {
        let batch_context = r#"{"library": {"name": "analytics-node"}, "locale": "zh-CN"}"#;
        let messages = [
            json!({"type": "track", "event": "Order Completed", "userId": 42, "messageId": 7,
                   "properties": {"revenue": 458.5, "coupon": "双十一", "url": "https://a.cn/x"},
                   "context": {"device": {"id": "d-7f3a"}, "traits": {"email": "Li@Example.cn", "城市": "上海"},
                               "externalIds": [{"id": "oY2", "type": "wechat_openid", "collection": "wxB"}],
                               "locale": "en-US"},
                   "traits": {"phone": "13800001234", "wechat_openid": "oX1", "wechat_appid": "wxA"},
                   "originalTimestamp": "2026-11-29T08:00:00.120Z", "sentAt": "2026-11-29T08:00:00.250Z",
                   "integrations": {"All": true}}),
            json!({"type": "identify", "anonymousId": "匿名-1", "traits": {"consent": {"sms": {"marketing": "granted"}}}}),
            json!({"type": "track", "event": "Consent Updated", "userId": "u",
                   "properties": {"channel": "sms", "purpose": "marketing", "state": "denied"}}),
            json!({"type": "group", "userId": "alice", "groupId": "acme", "traits": {"name": "Acme 公司"}}),
            json!({"type": "page", "userId": "a", "name": "结算", "category": "Shop", "properties": {"path": "/pay"}}),
            json!({"type": "alias", "userId": "u2", "previousId": "anon/9", "timestamp": "2026-01-01T00:00:00+08:00"}),
        ];
        let config = IdentityConfig::default();
        for (i, v) in messages.iter().enumerate() {
            let mut spaced = String::new();
            spelt_out(v, &mut spaced);
            let env = Envelope {
                context: Some(batch_context),
                ..env()
            };
            let compact = parse_message_text(&v.to_string(), &env, &config).expect("valid");
            let spaced = parse_message_text(&spaced, &env, &config).expect("valid");
            assert_eq!(spaced.message, compact.message, "message {i}");
            assert_eq!(spaced.dropped, compact.dropped, "message {i}");
            let m = &compact.message;
            for text in [&m.traits, &m.properties, &m.context] {
                let parsed: Value = serde_json::from_str(text).expect("stored text is JSON");
                assert_eq!(text, &parsed.to_string(), "message {i}: stored compactly");
            }
            let context = json::object(&m.context);
            assert_eq!(context["library"]["name"], "analytics-node", "message {i}");
        }
        let order = parse_message_text(&messages[0].to_string(), &env(), &config)
            .expect("valid")
            .message;
        assert_eq!(order.message_id, "7");
        assert_eq!(order.user_id.as_deref(), Some("42"));
        assert_eq!(
            order.traits_map()["城市"],
            "上海",
            "context traits merge under own"
        );
        assert_eq!(order.traits_map()["phone"], "13800001234");
        assert_eq!(json::object(&order.context)["locale"], "en-US");
        let ids: Vec<String> = order.identifiers.iter().map(ToString::to_string).collect();
        assert!(ids.contains(&"device_id:d-7f3a".to_string()), "{ids:?}");
        assert!(ids.contains(&"email:li@example.cn".to_string()), "{ids:?}");
        assert!(
            ids.contains(&"wechat_openid:wxB:oY2".to_string()),
            "{ids:?}"
        );
    }

    #[test]
    fn text_that_is_not_an_object_is_refused() {
        let config = IdentityConfig::default();
        let err = |text: &str| parse_message_text(text, &env(), &config).expect_err("refused");
        assert_eq!(err("[1]").reason, "message must be a JSON object");
        assert!(err(r#"{"type": "track""#)
            .reason
            .starts_with("not valid JSON"));
        assert!(err(r#"{"type": "track"} {}"#)
            .reason
            .starts_with("not valid JSON"));
        let e = err(r#"{"type": "identify", "userId": "u", "context": {"traits": 5}}"#);
        assert_eq!(e.field, "context.traits");
        let e = err(r#"{"type": "identify", "userId": "u", "context": {"externalIds": null}}"#);
        assert_eq!(e.field, "context.externalIds");
        let e = err(r#"{"type": "identify", "userId": "u", "messageId": " "}"#);
        assert_eq!(e.field, "messageId");
    }
}
