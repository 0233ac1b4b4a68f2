//! Retention periods: how long an event's content is kept, per event name, source or message
//! type (`DIR/retention.yaml`).
//!
//! ```yaml
//! rules:
//!   - { event: "Page Viewed", days: 400 }   # the track event (or page/screen name)
//!   - { source: web, days: 400 }            # every event of a source
//!   - { type: page, days: 180 }             # identify, track, page, screen, group, alias
//!   - { source: app, type: screen, days: 90 }  # fields combine: all must match
//! ```
//!
//! An event's period is the shortest of the rules it matches; an event no rule matches is kept.
//! [`crate::Engine::expire`] removes the content of the events whose event time is older than
//! `as_of − days`. Messages that record a consent decision are never expired (they are the
//! evidence of the decision; erasure removes them).

use std::path::{Path, PathBuf};

use portrait_core::{Message, MessageKind, SourceId};
use serde::{Deserialize, Serialize};

use crate::sources::SourceRegistry;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The longest retention period accepted, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// The policy file's name in the data directory.
pub const FILE: &str = "retention.yaml";

/// A retention policy: the rules of `DIR/retention.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules, in file order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule: the events it matches (every field given must match) and how long they are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The track event name, or the page/screen name (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A source name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A message type: identify, track, page, screen, group, alias.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Days an event is kept after its event time (1 to [`MAX_DAYS`]).
    pub days: u32,
}

/// Errors of a retention policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not a policy (YAML syntax, unknown field, wrong type).
    #[error("retention policy: {0}")]
    Parse(String),
    /// A rule is invalid; `rule` counts from 1.
    #[error("retention rule {rule}: {reason}")]
    Invalid {
        /// The rule's position, from 1.
        rule: usize,
        /// What is wrong.
        reason: String,
    },
    /// The policy file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
}

impl Rule {
    /// What the rule matches, for reports and warnings: `"Page Viewed" events`,
    /// `page events from source web`, `events from source web`.
    pub fn subject(&self) -> String {
        let mut s = String::new();
        if let Some(k) = &self.kind {
            s.push_str(k);
            s.push(' ');
        }
        if let Some(e) = &self.event {
            s.push_str(&format!("\"{e}\" "));
        }
        s.push_str("events");
        if let Some(src) = &self.source {
            s.push_str(&format!(" from source {src}"));
        }
        s
    }

    /// The period in milliseconds.
    pub fn period_ms(&self) -> i64 {
        i64::from(self.days) * DAY_MS
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} days", self.subject(), self.days)
    }
}

impl Policy {
    /// Parses a policy (YAML, or JSON) without checking it against the sources; see
    /// [`Policy::check`].
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        serde_yaml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))
    }

    /// The policy of a data directory (empty when it has no `retention.yaml`).
    pub fn load(dir: &Path) -> Result<Policy, PolicyError> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Policy::parse(&text).map_err(|e| match e {
                PolicyError::Parse(reason) => {
                    PolicyError::Parse(format!("{}: {reason}", path.display()))
                }
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
            Err(e) => Err(PolicyError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Checks every rule (a field to match, a known type and source, days within range) and
    /// writes the policy to `DIR/retention.yaml` atomically.
    pub fn save(&self, dir: &Path, sources: &SourceRegistry) -> Result<(), PolicyError> {
        self.check(sources)?;
        let path = dir.join(FILE);
        let yaml = serde_yaml::to_string(self).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let text = format!(
            "# Retention periods (docs/privacy.md, \"Retention\"); written by `portrait retention set`\n\
             # and PUT /api/v1/retention. An event's period is the shortest rule it matches.\n{yaml}"
        );
        crate::sources::write_atomic(&path, text.as_bytes()).map_err(|e| PolicyError::Io {
            path,
            reason: e.to_string(),
        })
    }

    /// Checks the rules against the sources; see [`Policy::matcher`].
    pub fn check(&self, sources: &SourceRegistry) -> Result<(), PolicyError> {
        self.matcher(sources).map(|_| ())
    }

    /// Compiles the rules for matching messages: each rule must name an event, a source or a
    /// type; the type must be a Segment type, the source a registered one, and `days` between
    /// 1 and [`MAX_DAYS`].
    pub fn matcher(&self, sources: &SourceRegistry) -> Result<Matcher, PolicyError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let bad = |reason: String| PolicyError::Invalid {
                rule: i + 1,
                reason,
            };
            if r.event.is_none() && r.source.is_none() && r.kind.is_none() {
                return Err(bad(
                    "name an `event`, a `source` or a `type` to match (e.g. { event: \"Page Viewed\", days: 400 })".into(),
                ));
            }
            if r.days == 0 || r.days > MAX_DAYS {
                return Err(bad(format!(
                    "`days` must be between 1 and {MAX_DAYS}, not {}",
                    r.days
                )));
            }
            if r.event.as_deref().is_some_and(|e| e.trim().is_empty()) {
                return Err(bad("`event` is empty".into()));
            }
            let kind = match &r.kind {
                None => None,
                Some(k) => Some(MessageKind::parse(k).ok_or_else(|| {
                    bad(format!(
                        "unknown type `{k}` (identify, track, page, screen, group, alias)"
                    ))
                })?),
            };
            let source = match &r.source {
                None => None,
                Some(name) => Some(
                    sources
                        .by_name(name)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                sources.list().iter().map(|s| s.name.as_str()).collect();
                            bad(format!(
                                "unknown source `{name}` (sources: {})",
                                if known.is_empty() {
                                    "none yet".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ))
                        })?
                        .id,
                ),
            };
            rules.push(Compiled {
                event: r.event.clone(),
                source,
                kind,
                period_ms: r.period_ms(),
            });
        }
        Ok(Matcher {
            rules,
            policy: self.rules.clone(),
        })
    }

    /// The rules (indexes) that may match an event with this name, source and type, where
    /// `None` means "any": for checks that know only names, such as tag lineage.
    pub fn may_match(
        &self,
        event: Option<&str>,
        source: Option<&str>,
        kind: Option<&str>,
    ) -> Vec<usize> {
        let fits = |rule: &Option<String>, have: Option<&str>| match (rule, have) {
            (Some(r), Some(h)) => r == h,
            _ => true,
        };
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                fits(&r.event, event) && fits(&r.source, source) && fits(&r.kind, kind)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    event: Option<String>,
    source: Option<SourceId>,
    kind: Option<MessageKind>,
    period_ms: i64,
}

/// A policy compiled against the sources: which rule governs a message.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<Compiled>,
    policy: Vec<Rule>,
}

impl Matcher {
    /// The rules as written, in policy order.
    pub fn rules(&self) -> &[Rule] {
        &self.policy
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The shortest period of any rule, in milliseconds (`None` without rules).
    pub fn shortest_ms(&self) -> Option<i64> {
        self.rules.iter().map(|r| r.period_ms).min()
    }

    /// The rule that governs `m`: the shortest period among the rules it matches (the first of
    /// equal ones), as `(rule index, period in ms)`.
    pub fn period(&self, m: &Message) -> Option<(usize, i64)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.kind.is_none_or(|k| k == m.kind)
                    && r.source.is_none_or(|s| s == m.source)
                    && r.event
                        .as_deref()
                        .is_none_or(|e| m.event.as_deref() == Some(e))
            })
            .min_by_key(|(i, r)| (r.period_ms, *i))
            .map(|(i, r)| (i, r.period_ms))
    }
}

/// What one retention rule expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    /// The rule.
    pub rule: Rule,
    /// Events expired under it (it was the shortest rule they matched).
    pub expired: u64,
}

/// What [`crate::Engine::expire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpiryReport {
    /// The instant periods were counted back from (ms).
    pub as_of: i64,
    /// Events whose content was removed.
    pub expired: u64,
    /// Per rule, in policy order.
    pub rules: Vec<RuleReport>,
    /// Events past their period left alone because they record a consent decision.
    pub consent_kept: u64,
    /// Events past their period left alone because the shortened record would not fit in place
    /// (not expected: the shortened record drops more than it adds).
    pub unfit: u64,
    /// Log positions of the expired events, for derived stores (the lake).
    #[serde(skip)]
    pub offsets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourceKind;

    fn registry(dir: &Path) -> SourceRegistry {
        let mut reg = SourceRegistry::open(dir).expect("open");
        reg.add("web", SourceKind::Web, None).expect("web");
        reg.add("app", SourceKind::App, None).expect("app");
        reg
    }

    fn message(kind: MessageKind, source: SourceId, event: Option<&str>) -> Message {
        Message {
            kind,
            message_id: "m".into(),
            source,
            event: event.map(str::to_string),
            user_id: Some("u".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: 0,
            received_at: 0,
            sent_at: None,
            original_timestamp: None,
            traits: "{}".into(),
            properties: "{}".into(),
            context: "{}".into(),
            identifiers: Vec::new(),
        }
    }

    #[test]
    fn the_shortest_matching_rule_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path());
        let policy = Policy::parse(
            "rules:\n  - { event: Page Viewed, days: 400 }\n  - { source: web, days: 500 }\n  - { type: page, days: 180 }\n",
        )
        .expect("parse");
        let m = policy.matcher(&reg).expect("compile");
        let web = reg.by_name("web").expect("web").id;
        let app = reg.by_name("app").expect("app").id;
        let viewed = message(MessageKind::Track, web, Some("Page Viewed"));
        assert_eq!(m.period(&viewed), Some((0, 400 * DAY_MS)));
        let page = message(MessageKind::Page, web, Some("Home"));
        assert_eq!(m.period(&page), Some((2, 180 * DAY_MS)));
        let order = message(MessageKind::Track, web, Some("Order Completed"));
        assert_eq!(m.period(&order), Some((1, 500 * DAY_MS)));
        let app_order = message(MessageKind::Track, app, Some("Order Completed"));
        assert_eq!(m.period(&app_order), None);
        assert_eq!(m.shortest_ms(), Some(180 * DAY_MS));
    }

    #[test]
    fn invalid_policies_say_which_rule_and_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path());
        let err = |text: &str| {
            Policy::parse(text)
                .and_then(|p| p.check(&reg))
                .expect_err(text)
                .to_string()
        };
        assert!(
            err("rules:\n  - { type: pageview, days: 10 }")
                .contains("rule 1: unknown type `pageview`"),
            "{}",
            err("rules:\n  - { type: pageview, days: 10 }")
        );
        assert!(
            err("rules:\n  - { event: a, days: 1 }\n  - { event: b, days: 0 }")
                .contains("rule 2: `days` must be between 1")
        );
        assert!(err("rules:\n  - { source: pos, days: 30 }")
            .contains("unknown source `pos` (sources: web, app)"));
        assert!(err("rules:\n  - { days: 30 }").contains("name an `event`, a `source` or a `type`"));
        assert!(
            err("rules:\n  - { event: a, days: 30, weeks: 2 }").contains("unknown field `weeks`")
        );
        assert!(err("rules:\n  - { event: a, days: -3 }").starts_with("retention policy:"));
        assert!(Policy::parse("").expect("empty").rules.is_empty());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path());
        assert_eq!(Policy::load(dir.path()).expect("none"), Policy::default());
        let policy = Policy::parse(
            r#"{"rules": [{"event": "Page Viewed", "days": 400}, {"source": "web", "type": "page", "days": 30}]}"#,
        )
        .expect("json");
        policy.save(dir.path(), &reg).expect("save");
        assert_eq!(Policy::load(dir.path()).expect("load"), policy);
        let bad = Policy {
            rules: vec![Rule {
                event: None,
                source: Some("nope".into()),
                kind: None,
                days: 3,
            }],
        };
        assert!(bad.save(dir.path(), &reg).is_err());
        assert_eq!(
            Policy::load(dir.path()).expect("kept"),
            policy,
            "a refused policy is not written"
        );
    }
}
