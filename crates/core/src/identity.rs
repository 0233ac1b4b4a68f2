//! Identifier types, normalisation and blocking: the configuration of identity resolution.
//!
//! Each identifier type has a priority (position in [`IdentityConfig::types`], first = highest)
//! and a limit: how many distinct values of that type one profile may hold. When a message
//! would push a profile past a limit, resolution drops the message's lowest-priority
//! identifier and tries again (Segment Unify's rule), so one shared phone or test account
//! cannot swallow thousands of people.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::message::Identifier;

/// Errors in an identity configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A blocked-value pattern does not compile.
    #[error(
        "identifier type `{kind}`: blocked pattern `{pattern}` is not a valid regex: {source}"
    )]
    BadPattern {
        /// Identifier type.
        kind: String,
        /// The pattern.
        pattern: String,
        /// Regex error.
        source: regex::Error,
    },
    /// Two types share a name.
    #[error("identifier type `{0}` is defined twice")]
    Duplicate(String),
    /// A limit of zero would make the type unusable.
    #[error("identifier type `{0}`: limit must be at least 1")]
    ZeroLimit(String),
}

/// How values of an identifier type are normalised before matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalizer {
    /// Trim white space only.
    #[default]
    Trim,
    /// Trim and lower-case.
    Lowercase,
    /// Email: trim, lower-case, must contain one `@` with text on both sides.
    Email,
    /// Phone: to E.164, `+86` when no country code is given; masked numbers are rejected.
    Phone,
}

/// One identifier type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierType {
    /// Name, as used in identifiers (`phone`).
    pub name: String,
    /// Most distinct values one profile may hold.
    pub limit: u32,
    /// Normalisation applied to values.
    #[serde(default)]
    pub normalize: Normalizer,
    /// Trait keys (in `traits` or `context.traits`) the type is read from.
    #[serde(default)]
    pub traits: Vec<String>,
    /// For scoped types (WeChat openid per app): the trait holding the scope. The stored value is
    /// `scope:value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_trait: Option<String>,
    /// Extra blocked-value patterns (regex, case-insensitive, whole value).
    #[serde(default)]
    pub blocked: Vec<String>,
}

/// Values blocked for every type: placeholders that clients send when they have no id.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "",
    "null",
    "undefined",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "anonymous",
    "unknown",
    "n/a",
    "na",
];

/// Why an operator-typed identifier cannot be looked up. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such identifier type.
    #[error("unknown identifier type `{kind}`; known: {}", known.join(", "))]
    UnknownType {
        /// The type asked for.
        kind: String,
        /// The configured types.
        known: Vec<String>,
    },
    /// The value is not a valid identifier of its type.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The identity resolution configuration: identifier types in priority order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Identifier types, highest priority first.
    pub types: Vec<IdentifierType>,
    /// Extra patterns blocked for every type (regex, case-insensitive, whole value).
    #[serde(default)]
    pub blocked: Vec<String>,
    #[serde(skip)]
    compiled: Vec<Option<Regex>>,
    #[serde(skip)]
    global: Option<Regex>,
}

fn ty(name: &str, limit: u32, normalize: Normalizer, traits: &[&str]) -> IdentifierType {
    IdentifierType {
        name: name.into(),
        limit,
        normalize,
        traits: traits.iter().map(|s| s.to_string()).collect(),
        scope_trait: None,
        blocked: Vec::new(),
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        use Normalizer::*;
        let mut openid = ty(
            "wechat_openid",
            10,
            Trim,
            &["wechat_openid", "openid", "wechatOpenid"],
        );
        openid.scope_trait = Some("wechat_appid".into());
        let types = vec![
            ty("user_id", 1, Trim, &[]),
            ty("member_id", 1, Trim, &["member_id", "memberId"]),
            ty(
                "wechat_unionid",
                1,
                Trim,
                &["wechat_unionid", "unionid", "wechatUnionid"],
            ),
            ty("tmall_nick", 2, Trim, &["tmall_nick"]),
            ty("jd_pin", 2, Trim, &["jd_pin"]),
            ty("phone", 2, Phone, &["phone", "mobile", "phone_number"]),
            ty("email", 3, Email, &["email"]),
            openid,
            ty("device_id", 10, Trim, &[]),
            ty("anonymous_id", 5, Trim, &[]),
        ];
        Self::new(types, Vec::new()).unwrap_or_else(|_| unreachable!("defaults compile"))
    }
}

impl IdentityConfig {
    /// Builds and checks a configuration.
    pub fn new(types: Vec<IdentifierType>, blocked: Vec<String>) -> Result<Self, IdentityError> {
        let mut config = Self {
            types,
            blocked,
            compiled: Vec::new(),
            global: None,
        };
        config.compile()?;
        Ok(config)
    }

    /// Compiles patterns after deserialisation. Idempotent.
    pub fn compile(&mut self) -> Result<(), IdentityError> {
        let mut seen = std::collections::HashSet::new();
        self.compiled.clear();
        for t in &self.types {
            if !seen.insert(t.name.clone()) {
                return Err(IdentityError::Duplicate(t.name.clone()));
            }
            if t.limit == 0 {
                return Err(IdentityError::ZeroLimit(t.name.clone()));
            }
            self.compiled.push(alternation(&t.name, &t.blocked)?);
        }
        self.global = alternation("*", &self.blocked)?;
        Ok(())
    }

    /// Index (priority rank) of a type; lower is higher priority.
    pub fn rank(&self, kind: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == kind)
    }

    /// The type at a rank.
    pub fn type_at(&self, rank: usize) -> &IdentifierType {
        &self.types[rank]
    }

    /// Normalises a raw value of a type. Returns `Err(reason)` for values that are not
    /// identifiers (blocked, masked, malformed).
    pub fn normalize(&self, kind: &str, raw: &str) -> Result<String, &'static str> {
        let rank = self.rank(kind).ok_or("unknown identifier type")?;
        let t = &self.types[rank];
        let trimmed = raw.trim();
        let lowered = trimmed.to_lowercase();
        if DEFAULT_BLOCKED.contains(&lowered.as_str()) {
            return Err("blocked value");
        }
        let value = match t.normalize {
            Normalizer::Trim => trimmed.to_string(),
            Normalizer::Lowercase => lowered,
            Normalizer::Email => normalize_email(&lowered).ok_or("not an email address")?,
            Normalizer::Phone => normalize_phone(trimmed)?,
        };
        let blocked_by = |re: &Option<Regex>| re.as_ref().is_some_and(|re| re.is_match(&value));
        if blocked_by(&self.global) || blocked_by(&self.compiled[rank]) {
            return Err("blocked value");
        }
        Ok(value)
    }

    /// Normalises into an [`Identifier`], with an optional scope (`wechat_appid`).
    pub fn identifier(
        &self,
        kind: &str,
        raw: &str,
        scope: Option<&str>,
    ) -> Result<Identifier, &'static str> {
        let value = self.normalize(kind, raw)?;
        Ok(match scope.map(str::trim).filter(|s| !s.is_empty()) {
            Some(scope) => Identifier::new(kind, format!("{scope}:{value}")),
            None => Identifier::new(kind, value),
        })
    }

    /// An identifier typed by an operator (URL, CLI) for a lookup: the type must exist, the
    /// value is normalised; a value that does not normalise but holds `:` (a scoped value such as
    /// `appid:openid`) is taken as typed.
    pub fn lookup_identifier(&self, kind: &str, value: &str) -> Result<Identifier, LookupError> {
        if self.rank(kind).is_none() {
            let known = self.types.iter().map(|t| t.name.clone()).collect();
            return Err(LookupError::UnknownType {
                kind: kind.to_string(),
                known,
            });
        }
        match self.normalize(kind, value) {
            Ok(v) => Ok(Identifier::new(kind, v)),
            Err(_) if value.contains(':') => Ok(Identifier::new(kind, value)),
            Err(reason) => Err(LookupError::Invalid(reason)),
        }
    }

    /// Sorts identifiers by priority (highest first) and removes duplicates.
    pub fn sort(&self, ids: &mut Vec<Identifier>) {
        let rank = |id: &Identifier| self.rank(&id.kind).unwrap_or(usize::MAX);
        ids.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.value.cmp(&b.value)));
        ids.dedup();
    }
}

fn alternation(kind: &str, patterns: &[String]) -> Result<Option<Regex>, IdentityError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    for p in patterns {
        Regex::new(p).map_err(|source| IdentityError::BadPattern {
            kind: kind.into(),
            pattern: p.clone(),
            source,
        })?;
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    Regex::new(&format!("(?i)^(?:{joined})$"))
        .map(Some)
        .map_err(|source| IdentityError::BadPattern {
            kind: kind.into(),
            pattern: joined,
            source,
        })
}

fn normalize_email(lowered: &str) -> Option<String> {
    let (local, domain) = lowered.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !lowered.chars().any(char::is_whitespace);
    ok.then(|| lowered.to_string())
}

/// Normalises a phone number to E.164 (`+8613800000000`).
///
/// Separators (space, `-`, `.`, parentheses) are removed; `0086`/`86` prefixes on an
/// 11-digit mainland mobile number and bare mainland mobiles get `+86`. Masked numbers
/// (`138****0000`), numbers of one repeated digit and malformed numbers are rejected.
pub fn normalize_phone(raw: &str) -> Result<String, &'static str> {
    if raw.contains('*') {
        return Err("masked phone number");
    }
    let mut digits = String::with_capacity(raw.len());
    let mut plus = false;
    for (i, c) in raw.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '\u{3000}' => {}
            _ => return Err("not a phone number"),
        }
    }
    let mainland = |d: &str| d.len() == 11 && d.starts_with('1');
    let e164 = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("0086").filter(|r| mainland(r)) {
        format!("86{rest}")
    } else if let Some(rest) = digits.strip_prefix("86").filter(|r| mainland(r)) {
        format!("86{rest}")
    } else if mainland(&digits) {
        format!("86{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else {
        return Err("not a phone number");
    };
    if !(8..=15).contains(&e164.len()) {
        return Err("not a phone number");
    }
    let national = e164
        .strip_prefix("86")
        .filter(|r| r.len() == 11)
        .unwrap_or(&e164);
    let first = national.as_bytes()[0];
    if national.bytes().all(|b| b == first) {
        return Err("blocked value");
    }
    Ok(format!("+{e164}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_variants_normalise_to_one_value() {
        for raw in [
            "13800001234",
            "+86 138-0000-1234",
            "0086 138 0000 1234",
            "86-13800001234",
        ] {
            assert_eq!(
                normalize_phone(raw),
                Ok("+8613800001234".to_string()),
                "{raw}"
            );
        }
        assert_eq!(
            normalize_phone("+1 (415) 555-0100"),
            Ok("+14155550100".to_string())
        );
    }

    #[test]
    fn bad_phones_are_rejected() {
        assert_eq!(normalize_phone("138****0000"), Err("masked phone number"));
        assert_eq!(normalize_phone("00000000000"), Err("blocked value"));
        assert_eq!(normalize_phone("11111111111"), Err("blocked value"));
        assert_eq!(normalize_phone("+86 00000000000"), Err("blocked value"));
        assert_eq!(normalize_phone("call me"), Err("not a phone number"));
    }

    #[test]
    fn blocked_and_email() {
        let c = IdentityConfig::default();
        assert_eq!(c.normalize("user_id", " undefined "), Err("blocked value"));
        assert_eq!(c.normalize("user_id", "NULL"), Err("blocked value"));
        assert_eq!(
            c.normalize("email", " Li.Lei@Example.COM "),
            Ok("li.lei@example.com".into())
        );
        assert_eq!(c.normalize("email", "nobody"), Err("not an email address"));
        assert_eq!(c.normalize("fax", "1"), Err("unknown identifier type"));
    }

    #[test]
    fn custom_blocked_patterns() {
        let mut types = IdentityConfig::default().types;
        types[0].blocked = vec!["test.*".into()];
        let c = IdentityConfig::new(types, vec!["demo".into()]).expect("valid");
        assert_eq!(c.normalize("user_id", "TEST_42"), Err("blocked value"));
        assert_eq!(c.normalize("member_id", "demo"), Err("blocked value"));
        assert_eq!(c.normalize("member_id", "testing"), Ok("testing".into()));
        let bad = IdentityConfig::new(
            vec![IdentifierType {
                blocked: vec!["(".into()],
                ..c.types[0].clone()
            }],
            vec![],
        );
        assert!(matches!(bad, Err(IdentityError::BadPattern { .. })));
    }
}
