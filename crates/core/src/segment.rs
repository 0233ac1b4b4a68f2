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

use serde_json::{Map, Value};

use crate::identity::IdentityConfig;
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
    /// Batch-level `context`, merged under each message's own.
    pub context: Option<&'a Map<String, Value>>,
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

/// Parses and validates one message.
pub fn parse_message(
    value: &Value,
    env: &Envelope<'_>,
    config: &IdentityConfig,
) -> Result<Parsed, FieldError> {
    let obj = value
        .as_object()
        .ok_or_else(|| FieldError::new("", "message must be a JSON object"))?;
    let kind = match obj.get("type") {
        Some(Value::String(t)) => MessageKind::parse(t)
            .ok_or_else(|| FieldError::new("type", format!("unknown message type `{t}`")))?,
        Some(_) => return Err(FieldError::new("type", "must be a string")),
        None => env
            .kind
            .ok_or_else(|| FieldError::new("type", "is required in a batch"))?,
    };
    let user_id = id_field(obj, "userId")?;
    let anonymous_id = id_field(obj, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(FieldError::new(
            "userId",
            "userId or anonymousId is required",
        ));
    }
    let previous_id = id_field(obj, "previousId")?;
    let group_id = id_field(obj, "groupId")?;
    let event = match kind {
        MessageKind::Track => Some(
            string_field(obj, "event")?
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| FieldError::new("event", "is required for track"))?,
        ),
        MessageKind::Page | MessageKind::Screen => string_field(obj, "name")?,
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

    // Borrow where nothing needs merging; most messages have no batch-level context.
    let empty = Map::new();
    let own_context = object_field(obj, "context")?;
    let merged_context;
    let context: &Map<String, Value> = match (env.context, own_context) {
        (Some(batch), Some(own)) => {
            let mut m = batch.clone();
            m.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged_context = m;
            &merged_context
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => &empty,
    };
    let context_traits = match context.get("traits") {
        Some(Value::Object(t)) => Some(t),
        Some(Value::Null) | None => None,
        Some(_) => return Err(FieldError::new("context.traits", "must be an object")),
    };
    // A group call's `traits` describe the group, not the person: they are kept as the event's
    // properties, and only `context.traits` reach the profile.
    let own_traits = object_field(obj, "traits")?.filter(|_| kind != MessageKind::Group);
    let merged_traits;
    let traits: &Map<String, Value> = match (context_traits, own_traits) {
        (Some(ctx), Some(own)) => {
            let mut m = ctx.clone();
            m.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged_traits = m;
            &merged_traits
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => &empty,
    };
    let mut properties = object_field(obj, "properties")?.unwrap_or(&empty);
    let extended_properties;
    let extra: Option<(&str, Value)> = match kind {
        MessageKind::Group => object_field(obj, "traits")?
            .filter(|t| !t.is_empty())
            .map(|t| ("group_traits", Value::Object(t.clone()))),
        MessageKind::Page | MessageKind::Screen => {
            string_field(obj, "category")?.map(|c| ("category", Value::String(c)))
        }
        _ => None,
    };
    if let Some((k, v)) = extra.filter(|(k, _)| !properties.contains_key(*k)) {
        let mut m = properties.clone();
        m.insert(k.to_string(), v);
        extended_properties = m;
        properties = &extended_properties;
    }

    crate::consent::updates(kind, event.as_deref(), properties, traits)
        .map_err(|(field, reason)| FieldError::new(&field, reason))?;

    let received_at = env.received_at;
    let sent_at = time_field(obj, "sentAt")?.or(env.sent_at);
    let original_timestamp = time_field(obj, "originalTimestamp")?;
    let explicit = time_field(obj, "timestamp")?;
    let timestamp = match (original_timestamp, sent_at, explicit) {
        (Some(orig), Some(sent), _) => received_at - (sent - orig),
        (Some(orig), None, _) => orig,
        (None, _, Some(ts)) => ts,
        (None, _, None) => received_at,
    };

    let message_id = match obj.get("messageId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => format!(
            "h-{:032x}",
            xxhash_rust::xxh3::xxh3_128(value.to_string().as_bytes())
        ),
        Some(_) => return Err(FieldError::new("messageId", "must be a string")),
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
    if let Some(Value::Object(device)) = context.get("device") {
        if let Some(id) = device.get("id").and_then(scalar_text) {
            push("device_id", &id, None);
        }
    }
    if let Some(external) = context.get("externalIds") {
        let Value::Array(items) = external else {
            return Err(FieldError::new("context.externalIds", "must be an array"));
        };
        for (i, item) in items.iter().enumerate() {
            let id = item.get("id").and_then(scalar_text);
            let kind = item.get("type").and_then(Value::as_str);
            let (Some(id), Some(kind)) = (id, kind) else {
                return Err(FieldError::new(
                    &format!("context.externalIds[{i}]"),
                    "needs string `id` and `type`",
                ));
            };
            let scoped = config
                .rank(kind)
                .is_some_and(|r| config.type_at(r).scope_trait.is_some());
            let scope = item
                .get("collection")
                .and_then(Value::as_str)
                .filter(|_| scoped);
            push(kind, &id, scope);
        }
    }
    for t in &config.types {
        let scope = t
            .scope_trait
            .as_ref()
            .and_then(|k| traits.get(k))
            .and_then(scalar_text);
        for key in &t.traits {
            if let Some(raw) = traits.get(key).and_then(scalar_text) {
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
        traits: to_json_text(traits),
        properties: to_json_text(properties),
        context: to_json_text(context),
        identifiers: ids,
    };
    Ok(Parsed { message, dropped })
}

fn to_json_text(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        return "{}".into();
    }
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// Text of a string or number value; `None` for other JSON types.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn id_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v @ (Value::String(_) | Value::Number(_))) => Ok(scalar_text(v)),
        Some(_) => Err(FieldError::new(key, "must be a string or a number")),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FieldError::new(key, "must be a string")),
    }
}

fn object_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(FieldError::new(key, "must be an object")),
    }
}

fn time_field(obj: &Map<String, Value>, key: &str) -> Result<Option<Millis>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso(s)
            .map(Some)
            .ok_or_else(|| FieldError::new(key, format!("`{s}` is not an ISO-8601 timestamp"))),
        Some(_) => Err(FieldError::new(key, "must be an ISO-8601 string")),
    }
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
}
