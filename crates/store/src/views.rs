//! JSON views of stored objects, shared by the HTTP API and the CLI.

use portrait_core::time::format_iso;
use portrait_core::{MergeRecord, Profile};
use serde_json::{json, Map, Value};

use crate::sources::SourceRegistry;

/// A profile as the API shows it.
pub fn profile_json(p: &Profile, sources: &SourceRegistry) -> Value {
    let traits: Map<String, Value> = p
        .traits
        .iter()
        .map(|(k, v)| {
            let value: Value = serde_json::from_str(&v.value).unwrap_or(Value::Null);
            let shown = json!({
                "value": value,
                "source": sources.name(v.source),
                "updated_at": format_iso(v.updated_at),
            });
            (k.clone(), shown)
        })
        .collect();
    let per_source: Map<String, Value> = p
        .sources
        .iter()
        .map(|(s, n)| (sources.name(*s).to_string(), json!(n)))
        .collect();
    json!({
        "id": p.id,
        "identifiers": p.identifiers,
        "traits": traits,
        "first_seen": format_iso(p.first_seen),
        "last_seen": format_iso(p.last_seen),
        "event_count": p.events.len(),
        "sources": per_source,
        "merged_from": p.merged_from,
        "consent": consent_json(p, sources),
    })
}

/// A profile's consent decisions: `{"sms/marketing": {state, source, at, evidence}}`; pairs with
/// no decision are absent (unknown).
pub fn consent_json(p: &Profile, sources: &SourceRegistry) -> Value {
    let items: Map<String, Value> = p
        .consent
        .iter()
        .map(|(k, r)| {
            let shown = json!({
                "state": r.state.as_str(),
                "source": sources.name(r.source),
                "at": format_iso(r.at),
                "evidence": r.message_id,
            });
            (k.clone(), shown)
        })
        .collect();
    Value::Object(items)
}

/// Identity decisions as the API shows them.
pub fn merges_json(history: &[MergeRecord], sources: &SourceRegistry) -> Value {
    let items: Vec<Value> = history
        .iter()
        .map(|r| {
            json!({
                "action": r.action,
                "at": format_iso(r.at),
                "message_id": r.message_id,
                "source": r.source.map(|s| sources.name(s).to_string()),
                "identifiers": r.identifiers,
                "survivor": r.survivor,
                "others": r.others,
            })
        })
        .collect();
    Value::Array(items)
}

// ---------------------------------------------------------------------------------------------
// Masking: what a caller who may not see personal information gets instead.
// ---------------------------------------------------------------------------------------------

/// Keys (of traits, properties and context, at any depth) whose values are personal
/// information and are masked in masked views. Keys are compared after lower-casing ASCII and
/// removing `_`, `-`, `.` and spaces, so `firstName`, `first_name` and `First-Name` are one key.
pub const PII_KEYS: &[&str] = &[
    "name",
    "first_name",
    "last_name",
    "full_name",
    "real_name",
    "nickname",
    "姓名",
    "名字",
    "昵称",
    "phone",
    "mobile",
    "phone_number",
    "手机",
    "手机号",
    "电话",
    "email",
    "邮箱",
    "address",
    "地址",
    "id_number",
    "id_card",
    "身份证",
    "身份证号",
    "birthday",
    "生日",
    "ip",
];

/// Key endings that also mark personal information (`receiver_phone`, `shipping_address`,
/// `联系电话`, `收货地址`). `name` is deliberately not here: `product_name` is not personal.
pub const PII_KEY_SUFFIXES: &[&str] = &[
    "phone",
    "mobile",
    "email",
    "address",
    "手机",
    "手机号",
    "电话",
    "邮箱",
    "地址",
    "姓名",
];

/// Identifier types shown in clear in masked views: opaque ids the brand's own systems assign.
/// Every other identifier type — `phone`, `email`, `wechat_openid`, `wechat_unionid`,
/// `tmall_nick`, `jd_pin`, `member_id` and any type a configuration adds — is masked. Values of
/// these types still go through [`scrub_text`], so a `user_id` that is a phone number is masked.
pub const CLEAR_IDENTIFIER_TYPES: &[&str] = &["user_id", "anonymous_id", "device_id"];

fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether values under `key` are personal information ([`PII_KEYS`], [`PII_KEY_SUFFIXES`]).
pub fn is_pii_key(key: &str) -> bool {
    let key = normalize_key(key);
    PII_KEYS.iter().any(|k| normalize_key(k) == key)
        || PII_KEY_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// `+8613800001234` → `138****1234`: the first three and last four digits of the national
/// number (`+86`/`0086`/`86` dropped); numbers of fewer than 7 digits become `****`.
pub fn mask_phone(value: &str) -> String {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let national = ["0086", "86"]
        .iter()
        .find_map(|p| digits.strip_prefix(p).filter(|r| r.len() == 11))
        .unwrap_or(&digits);
    if national.len() < 7 {
        return "****".into();
    }
    format!("{}****{}", &national[..3], &national[national.len() - 4..])
}

/// `li.lei@example.com` → `l***@example.com`.
pub fn mask_email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{domain}", mask_text(local)),
        None => mask_text(value),
    }
}

/// Any other personal value: its first character and `***` (`韩梅梅` → `韩***`).
pub fn mask_text(value: &str) -> String {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (None, _) => String::new(),
        (Some(_), None) => "*".into(),
        (Some(first), Some(_)) => format!("{first}***"),
    }
}

/// Masks one personal value by its shape: an e-mail address with [`mask_email`], a phone-like
/// number (digits, `+`, separators; at least 7 digits) with [`mask_phone`], anything else with
/// [`mask_text`].
pub fn mask_value(value: &str) -> String {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let phone_like = value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '.' | '(' | ')'));
    if value.contains('@') {
        mask_email(value)
    } else if phone_like && digits >= 7 {
        mask_phone(value)
    } else {
        mask_text(value)
    }
}

/// Masks an identifier value of type `kind` (see [`CLEAR_IDENTIFIER_TYPES`]). A scoped value
/// (`wx_app_1:oAbc…`) keeps its scope.
pub fn mask_identifier(kind: &str, value: &str) -> String {
    if CLEAR_IDENTIFIER_TYPES.contains(&kind) {
        return scrub_text(value).unwrap_or_else(|| value.to_string());
    }
    match value.split_once(':') {
        Some((scope, rest)) if !scope.is_empty() && !rest.is_empty() && !scope.contains('@') => {
            format!("{scope}:{}", mask_value(rest))
        }
        _ => mask_value(value),
    }
}

fn is_email_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Masks phone numbers and e-mail addresses inside free text (an `anonymousId`, a reject
/// reason, a property under an innocent key). A phone number is 11 digits starting `13`–`19`
/// (optionally behind `86`/`0086`), or 8–15 digits behind a `+`; single spaces, `-` or `.`
/// between digits are allowed. Returns `None` when the text has neither.
pub fn scrub_text(text: &str) -> Option<String> {
    let emails = scrub_emails(text);
    let phones = scrub_phones(emails.as_deref().unwrap_or(text));
    phones.or(emails)
}

fn scrub_emails(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > copied && is_email_char(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-'))
        {
            end += 1;
        }
        while end > i + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let domain = &text[i + 1..end];
        if start < i && domain.contains('.') {
            out.push_str(&text[copied..start]);
            out.push_str(&mask_email(&text[start..end]));
            copied = end;
        }
        i = end.max(i + 1);
    }
    (copied > 0).then(|| {
        out.push_str(&text[copied..]);
        out
    })
}

fn is_phone(digits: &str, plus: bool) -> bool {
    let mainland = |d: &str| {
        let b = d.as_bytes();
        b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
    };
    mainland(digits)
        || digits.strip_prefix("86").is_some_and(mainland)
        || digits.strip_prefix("0086").is_some_and(mainland)
        || (plus && (8..=15).contains(&digits.len()))
}

fn scrub_phones(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // A run of digits with single separators between them.
        let mut end = i;
        let mut digits = String::new();
        while end < bytes.len() {
            if bytes[end].is_ascii_digit() {
                digits.push(bytes[end] as char);
                end += 1;
            } else if matches!(bytes[end], b' ' | b'-' | b'.')
                && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                end += 1;
            } else {
                break;
            }
        }
        let plus = i > 0 && bytes[i - 1] == b'+';
        if is_phone(&digits, plus) {
            let start = if plus { i - 1 } else { i };
            out.push_str(&text[copied..start]);
            out.push_str(&mask_phone(&digits));
            copied = end;
        }
        i = end;
    }
    (copied > 0).then(|| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Masks a value found under `key`: every string or number below a personal key with
/// [`mask_value`]; elsewhere objects are walked and strings scrubbed with [`scrub_text`].
pub fn mask_field(key: &str, value: &mut Value) {
    if is_pii_key(key) {
        mask_all(value);
    } else {
        mask_tree(value);
    }
}

fn mask_all(value: &mut Value) {
    match value {
        Value::String(s) => *s = mask_value(s),
        Value::Number(n) => *value = Value::String(mask_value(&n.to_string())),
        Value::Array(items) => items.iter_mut().for_each(mask_all),
        Value::Object(map) => map.values_mut().for_each(mask_all),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Masks personal values anywhere in a JSON tree (see [`mask_field`]).
pub fn mask_tree(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Some(clean) = scrub_text(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_tree),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                mask_field(k, v);
            }
        }
        Value::Number(_) | Value::Bool(_) | Value::Null => {}
    }
}

/// Masks a list of `{"type", "value"}` identifiers in place.
pub fn mask_identifiers(list: &mut Value) {
    for item in list.as_array_mut().into_iter().flatten() {
        let kind = item["type"].as_str().unwrap_or_default().to_string();
        if let Some(Value::String(v)) = item.get_mut("value") {
            *v = mask_identifier(&kind, v);
        }
    }
}

/// Masks a [`profile_json`] view: identifiers by type, trait values by key.
pub fn mask_profile(view: &mut Value) {
    if let Some(ids) = view.get_mut("identifiers") {
        mask_identifiers(ids);
    }
    if let Some(Value::Object(traits)) = view.get_mut("traits") {
        for (key, shown) in traits.iter_mut() {
            if let Some(value) = shown.get_mut("value") {
                mask_field(key, value);
            }
        }
    }
}

/// Masks one event as the timeline shows it (`Message::to_json`): identifiers by type; traits,
/// properties and context by key; the ids scrubbed.
pub fn mask_event(view: &mut Value) {
    let Some(map) = view.as_object_mut() else {
        return;
    };
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "identifiers" => mask_identifiers(value),
            "traits" | "properties" | "context" | "userId" | "anonymousId" | "previousId"
            | "groupId" => mask_tree(value),
            _ => {}
        }
    }
}

/// Masks a [`merges_json`] view: the identifiers of each decision.
pub fn mask_merges(view: &mut Value) {
    for record in view.as_array_mut().into_iter().flatten() {
        if let Some(ids) = record.get_mut("identifiers") {
            mask_identifiers(ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_by_shape() {
        assert_eq!(mask_phone("+8613800000000"), "138****0000");
        assert_eq!(mask_phone("138-0000-1234"), "138****1234");
        assert_eq!(mask_phone("12345"), "****");
        assert_eq!(mask_email("Li.Lei@example.com"), "L***@example.com");
        assert_eq!(mask_text("韩梅梅"), "韩***");
        assert_eq!(mask_text("x"), "*");
        assert_eq!(mask_value("+86 139-0000-9999"), "139****9999");
        assert_eq!(mask_value("a@b.cn"), "*@b.cn");
        assert_eq!(mask_identifier("phone", "+8613800000000"), "138****0000");
        assert_eq!(
            mask_identifier("wechat_openid", "wx_app_1:oAbcdef"),
            "wx_app_1:o***"
        );
        assert_eq!(mask_identifier("member_id", "M0001"), "M***");
        assert_eq!(mask_identifier("user_id", "u-1"), "u-1");
        assert_eq!(mask_identifier("user_id", "13800000000"), "138****0000");
    }

    #[test]
    fn free_text_loses_phones_and_emails_only() {
        let cases = [
            ("call 13800001234 now", "call 138****1234 now"),
            ("tel +86 139-0000-9999.", "tel 139****9999."),
            ("13800001234@163.com", "1***@163.com"),
            ("mail li@x.cn, lei@y.com", "mail l***@x.cn, l***@y.com"),
            ("order 2024-06-18 #12345", "order 2024-06-18 #12345"),
            ("12345678901234", "12345678901234"),
            ("no @ here@", "no @ here@"),
        ];
        for (input, want) in cases {
            assert_eq!(
                scrub_text(input).as_deref().unwrap_or(input),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn keys_are_recognised_in_any_spelling() {
        for key in [
            "name",
            "firstName",
            "Phone",
            "receiver_phone",
            "收货地址",
            "姓名",
            "email",
        ] {
            assert!(is_pii_key(key), "{key}");
        }
        for key in ["product_name", "level", "revenue", "city"] {
            assert!(!is_pii_key(key), "{key}");
        }
    }

    #[test]
    fn an_event_is_masked_by_key_and_by_shape() {
        let mut event = json!({
            "type": "identify", "userId": "13800001234", "anonymousId": "dev-1",
            "traits": {"name": "韩梅梅", "phone": 13800001234_u64, "level": "gold",
                       "address": {"city": "上海", "street": "南京路"}},
            "properties": {"note": "ring li@x.cn", "revenue": 99.5},
            "context": {"traits": {"email": "Shared@Typo.cn"}},
            "identifiers": [{"type": "phone", "value": "+8613800001234"},
                            {"type": "anonymous_id", "value": "dev-1"}],
        });
        mask_event(&mut event);
        assert_eq!(
            event,
            json!({
                "type": "identify", "userId": "138****1234", "anonymousId": "dev-1",
                "traits": {"name": "韩***", "phone": "138****1234", "level": "gold",
                           "address": {"city": "上***", "street": "南***"}},
                "properties": {"note": "ring l***@x.cn", "revenue": 99.5},
                "context": {"traits": {"email": "S***@Typo.cn"}},
                "identifiers": [{"type": "phone", "value": "138****1234"},
                                {"type": "anonymous_id", "value": "dev-1"}],
            })
        );
    }
}
