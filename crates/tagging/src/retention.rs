//! Tags that read further back than the data is kept: a tag whose aggregate window reaches
//! past the retention period ([`portrait_store::retention`]) of the events it reads gives
//! different answers once those events expire. Such tags are flagged (a warning, never an
//! error): `tags apply` prints it, `tags show` and `GET /api/v1/tags/{name}` list it.
//!
//! The events an aggregate reads are taken from its filter: the event names, sources and types
//! it compares with (`event = "Page Viewed"`, `source in ("web")`, `type = "page"`); a field
//! the filter does not name may be anything. A rule applies to the aggregate unless the filter
//! names other values for one of the rule's fields.

use std::collections::BTreeSet;

use portrait_store::retention::{Policy, Rule, DAY_MS};
use portrait_tags::compile::{compile, Compiled};
use portrait_tags::def::{parse_defs, TagDef};
use portrait_tags::ir::{Aggregate, CmpOp, EventField, Expr, Plan, TagBody, Window};
use portrait_tags::value::Value;

use crate::error::TaggingError;
use crate::service::Tagging;

/// What an aggregate's filter says about the events it reads (`None`: any).
#[derive(Debug, Default)]
struct Scope {
    events: Option<BTreeSet<String>>,
    sources: Option<BTreeSet<String>>,
    types: Option<BTreeSet<String>>,
}

impl Scope {
    fn of(a: &Aggregate) -> Scope {
        let mut scope = Scope::default();
        let Some(filter) = &a.filter else {
            return scope;
        };
        let mut note = |field: EventField, value: &str| {
            let set = match field {
                EventField::Name => &mut scope.events,
                EventField::Source => &mut scope.sources,
                EventField::Type => &mut scope.types,
                EventField::Timestamp => return,
            };
            set.get_or_insert_with(BTreeSet::new)
                .insert(value.to_string());
        };
        filter.walk(&mut |e| match e {
            Expr::Cmp(CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
                (Expr::Event(f), Expr::Lit(Value::Str(v)))
                | (Expr::Lit(Value::Str(v)), Expr::Event(f)) => note(*f, v),
                _ => {}
            },
            Expr::In {
                expr,
                list,
                negated: false,
            } => {
                if let Expr::Event(f) = expr.as_ref() {
                    for v in list {
                        if let Value::Str(v) = v {
                            note(*f, v);
                        }
                    }
                }
            }
            _ => {}
        });
        scope
    }

    /// Whether `rule` may match events this scope reads.
    fn meets(&self, rule: &Rule) -> bool {
        let fits = |want: &Option<String>, have: &Option<BTreeSet<String>>| match (want, have) {
            (Some(w), Some(h)) => h.contains(w),
            _ => true,
        };
        fits(&rule.event, &self.events)
            && fits(&rule.source, &self.sources)
            && fits(&rule.kind, &self.types)
    }

    /// The events as a warning names them: `"Page Viewed"`, `page events from web`, `all events`.
    fn describe(&self) -> String {
        let quoted = |s: &BTreeSet<String>| {
            s.iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = match (&self.events, &self.types) {
            (Some(e), _) => quoted(e),
            (None, Some(t)) => {
                format!("{} events", t.iter().cloned().collect::<Vec<_>>().join("/"))
            }
            (None, None) => "all events".to_string(),
        };
        if let Some(s) = &self.sources {
            text.push_str(&format!(
                " from {}",
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        text
    }
}

/// How far back a window reads, in milliseconds (`None`: all time), and how it is said.
fn reach(w: &Window) -> (Option<i64>, String) {
    let days = |ms: i64| {
        let d = ms as f64 / DAY_MS as f64;
        if d.fract() == 0.0 {
            format!("{d:.0} days")
        } else {
            format!("{d:.1} days")
        }
    };
    match *w {
        Window::All => (None, "over all time".into()),
        Window::Rolling { ms } => (Some(ms), format!("over {}", days(ms))),
        Window::Ago { from_ms, .. } => (Some(from_ms), format!("back to {} ago", days(from_ms))),
        Window::Calendar { days: n } => (
            Some(i64::from(n) * DAY_MS),
            format!("over {n} calendar days"),
        ),
    }
}

/// The aggregates a tag reads directly.
fn aggregates_of(plan: &Plan, tag: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let Some(t) = plan.tags.get(tag) else {
        return out;
    };
    let mut visit = |e: &Expr| {
        e.walk(&mut |x| {
            if let Expr::Agg(i) = x {
                out.insert(*i);
            }
        })
    };
    match &t.body {
        TagBody::Rule(e) | TagBody::Metric(e) => visit(e),
        TagBody::Stage(cases) => cases.iter().for_each(|(_, e)| visit(e)),
        TagBody::Buckets { of, .. } => visit(of),
        TagBody::External => {}
    }
    out
}

/// The retention warnings of tag `tag` of `plan` under `policy`, e.g.
/// `reads "Page Viewed" over all time but it is kept 400 days`.
pub fn flags(plan: &Plan, tag: usize, policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if policy.rules.is_empty() {
        return out;
    }
    for i in aggregates_of(plan, tag) {
        let Some(a) = plan.aggregates.get(i) else {
            continue;
        };
        let (reach_ms, reach_text) = reach(&a.window);
        let scope = Scope::of(a);
        // Every rule that may cut the window short, in policy order.
        let cutting = policy
            .rules
            .iter()
            .filter(|r| scope.meets(r))
            .filter(|r| reach_ms.is_none_or(|ms| r.period_ms() < ms));
        for rule in cutting {
            let text = warning(&scope, rule, &reach_text);
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    out
}

/// One warning: `reads "Page Viewed" over all time but it is kept 400 days`.
fn warning(scope: &Scope, rule: &Rule, reach_text: &str) -> String {
    let single = scope
        .events
        .as_ref()
        .filter(|e| e.len() == 1)
        .and_then(|e| e.iter().next());
    // "it" when the rule is about exactly the one event the aggregate reads.
    let same_event = rule.source.is_none()
        && rule.kind.is_none()
        && scope.sources.is_none()
        && rule.event.is_some()
        && single == rule.event.as_ref();
    let what = match (&rule.event, &scope.events) {
        // The aggregate reads several names: name the one the rule keeps short.
        (Some(e), Some(names)) if names.len() > 1 => format!("\"{e}\""),
        _ => scope.describe(),
    };
    let kept = if same_event {
        format!("it is kept {} days", rule.days)
    } else {
        format!("{} are kept {} days", rule.subject(), rule.days)
    };
    format!("reads {what} {reach_text} but {kept}")
}

impl Tagging {
    /// The retention warnings of a tag's latest version (compiled with the published tags it
    /// may read), under the data directory's policy. A draft that does not compile has none.
    pub fn retention_flags(&self, name: &str) -> Result<Vec<String>, TaggingError> {
        let policy =
            Policy::load(self.engine().dir()).map_err(|e| TaggingError::Invalid(e.to_string()))?;
        if policy.rules.is_empty() {
            return Ok(Vec::new());
        }
        let latest = self
            .with_catalog(|c| c.tag(name).and_then(|t| t.latest().cloned()))
            .ok_or_else(|| TaggingError::UnknownTag(name.to_string()))?;
        let Ok(mine) = parse_defs(&latest.definition, &format!("catalog:{name}")) else {
            return Ok(Vec::new());
        };
        let names: BTreeSet<String> = mine.iter().map(|d| d.name.clone()).collect();
        let mut all: Vec<TagDef> = self
            .published_defs(&names)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        all.extend(mine);
        let Ok(Compiled { plan, .. }) = compile(&all, &self.known()) else {
            return Ok(Vec::new());
        };
        Ok(plan
            .tag_index(name)
            .map(|i| flags(&plan, i, &policy))
            .unwrap_or_default())
    }

    /// The published tags that read further back than their events are kept, with their
    /// warnings.
    pub fn retention_flagged(&self) -> Result<Vec<(String, Vec<String>)>, TaggingError> {
        let policy =
            Policy::load(self.engine().dir()).map_err(|e| TaggingError::Invalid(e.to_string()))?;
        if policy.rules.is_empty() {
            return Ok(Vec::new());
        }
        let (plan, _) = self.plan(None)?;
        Ok(plan
            .tags
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), flags(&plan, i, &policy)))
            .filter(|(_, f)| !f.is_empty())
            .collect())
    }
}

/// Retention warnings of the tags `names` of a freshly compiled plan, rendered as `tags apply`
/// prints them; a policy that does not load is a warning too.
pub(crate) fn apply_warnings(
    engine_dir: &std::path::Path,
    plan: &Plan,
    names: &[&str],
) -> Vec<String> {
    let policy = match Policy::load(engine_dir) {
        Ok(p) => p,
        Err(e) => return vec![format!("warning: {e}")],
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(i) = plan.tag_index(name) {
            for f in flags(plan, i, &policy) {
                out.push(format!("warning: tag `{name}` {f} (retention.yaml)"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portrait_tags::compile::Known;

    fn plan(yaml: &str) -> Plan {
        let defs = parse_defs(yaml, "t.yaml").expect("parse");
        compile(&defs, &Known::default()).expect("compile").plan
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text).expect("policy")
    }

    fn flags_of(yaml: &str, p: &Policy) -> Vec<String> {
        let plan = plan(yaml);
        flags(&plan, 0, p)
    }

    #[test]
    fn windows_past_the_retention_of_what_they_read_are_flagged() {
        let p = policy(
            "rules:\n  - { event: Page Viewed, days: 400 }\n  - { source: pos, days: 90 }\n",
        );
        assert_eq!(
            flags_of(
                "name: viewer\nrule: count(event = \"Page Viewed\") >= 1\n",
                &p
            ),
            vec![
                "reads \"Page Viewed\" over all time but it is kept 400 days",
                "reads \"Page Viewed\" over all time but events from source pos are kept 90 days"
            ]
        );
        assert_eq!(
            flags_of(
                "name: viewer\nrule: count(event = \"Page Viewed\" and source = \"web\", within 500d) >= 1\n",
                &p
            ),
            vec!["reads \"Page Viewed\" from web over 500 days but \"Page Viewed\" events are kept 400 days"]
        );
        assert!(
            flags_of(
                "name: viewer\nrule: count(event = \"Page Viewed\", within 30d) >= 1\n",
                &p
            )
            .is_empty(),
            "within every period"
        );
        // Events of any source: the POS rule cuts them at 90 days.
        assert_eq!(
            flags_of("name: buyer\nrule: count(event = \"Order Completed\", within 180d) >= 1\n", &p),
            vec!["reads \"Order Completed\" over 180 days but events from source pos are kept 90 days"]
        );
        // Another source named: the POS rule does not apply.
        assert!(flags_of(
            "name: buyer\nrule: count(event = \"Order Completed\" and source = \"tmall\", within 180d) >= 1\n",
            &p
        )
        .is_empty());
        assert_eq!(
            flags_of(
                "name: pages\nrule: count(between 600d and 30d ago) > 3\n",
                &policy("rules:\n  - { type: page, days: 180 }\n")
            ),
            vec!["reads all events back to 600 days ago but page events are kept 180 days"]
        );
        assert!(flags_of(
            "name: viewer\nrule: count(event = \"Page Viewed\") >= 1\n",
            &Policy::default()
        )
        .is_empty());
    }
}
