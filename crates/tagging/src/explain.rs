//! Why a profile has a tag value: the aggregates and tags the definition reads, evaluated for
//! that one profile from its own events, and every condition with both sides' values.

use portrait_tags::eval::{aggregate_events, eval_scalar, json_path, tag_value, RefEvent, Row};
use portrait_tags::ir::{Expr, Plan, ProfileField, TagBody};
use portrait_tags::value::Value;
use serde::Serialize;

/// One fact of an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    /// What was evaluated, in the DSL (`count(event = "Product Viewed", within 7d) >= 5`).
    pub expr: String,
    /// Its value for the profile (`6`, `true`, `null`).
    pub value: String,
    /// For a condition: whether it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<bool>,
}

/// The explanation of one tag for one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The tag.
    pub tag: String,
    /// The value recomputed now from the profile's events.
    pub value: String,
    /// The instant used (ms).
    pub as_of: i64,
    /// Aggregates and tags read, then conditions, in definition order.
    pub facts: Vec<Fact>,
    /// One line: `count(…) = 6 >= 5 ✓, count(…) = 0 >= 1 ✗ → true`.
    pub summary: String,
}

/// The inputs of one profile.
pub struct ProfileInput {
    /// Its events.
    pub events: Vec<RefEvent>,
    /// Its traits.
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// Stored values of tags that need the population (buckets, externals), by tag index.
    pub stored: Vec<Value>,
}

struct OneRow<'a> {
    aggs: &'a [Value],
    tags: &'a [Value],
    input: &'a ProfileInput,
    seen: (Value, Value),
}

impl Row for OneRow<'_> {
    fn agg(&self, i: usize) -> Value {
        self.aggs.get(i).cloned().unwrap_or(Value::Null)
    }
    fn tag(&self, i: usize) -> Value {
        self.tags.get(i).cloned().unwrap_or(Value::Null)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        json_path(&self.input.traits, path)
    }
    fn profile(&self, f: ProfileField) -> Value {
        match f {
            ProfileField::FirstSeen => self.seen.0.clone(),
            ProfileField::LastSeen => self.seen.1.clone(),
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Time(t) => portrait_core::time::format_iso(*t),
        other => other.to_string(),
    }
}

/// Renders an expression with aggregates and tags spelled out.
fn text(e: &Expr, plan: &Plan) -> String {
    match e {
        Expr::Agg(i) => plan
            .aggregates
            .get(*i)
            .map_or_else(|| e.to_string(), |a| a.to_string()),
        Expr::Tag(i) => plan
            .tags
            .get(*i)
            .map_or_else(|| e.to_string(), |t| format!("tag.{}", t.name)),
        Expr::Call(f, args) if args.len() == 1 => {
            format!(
                "{}({})",
                portrait_tags::compile::func_name(*f),
                text(&args[0], plan)
            )
        }
        other => other.to_string(),
    }
}

/// Explains tag `tag` (an index into `plan.tags`) for one profile at `as_of`.
pub fn explain(plan: &Plan, tag: usize, input: &ProfileInput, as_of: i64) -> Explanation {
    let tz = plan.time_zone;
    let rows = || input.events.iter().map(RefEvent::row);
    let aggs: Vec<Value> = plan
        .aggregates
        .iter()
        .map(|a| aggregate_events(a, rows(), as_of, tz))
        .collect();
    let in_range: Vec<i64> = input
        .events
        .iter()
        .map(|e| e.timestamp_ms)
        .filter(|t| *t <= as_of)
        .collect();
    let seen = (
        in_range
            .iter()
            .min()
            .map_or(Value::Null, |t| Value::Time(*t)),
        in_range
            .iter()
            .max()
            .map_or(Value::Null, |t| Value::Time(*t)),
    );
    let mut tags: Vec<Value> = Vec::with_capacity(plan.tags.len());
    for (i, t) in plan.tags.iter().enumerate() {
        let row = OneRow {
            aggs: &aggs,
            tags: &tags,
            input,
            seen: seen.clone(),
        };
        let v = match &t.body {
            TagBody::Buckets { .. } | TagBody::External => {
                input.stored.get(i).cloned().unwrap_or(Value::Null)
            }
            body => tag_value(body, &row, as_of, tz),
        };
        tags.push(v);
    }
    let row = OneRow {
        aggs: &aggs,
        tags: &tags,
        input,
        seen,
    };
    let target = &plan.tags[tag];
    let mut facts = Vec::new();
    let mut conds = Vec::new();
    match &target.body {
        TagBody::Rule(e) | TagBody::Metric(e) => {
            collect(e, plan, &row, as_of, &mut facts, &mut conds)
        }
        TagBody::Stage(cases) => {
            for (label, e) in cases {
                let holds = eval_scalar(e, &row, as_of, tz).truthy();
                collect(e, plan, &row, as_of, &mut facts, &mut conds);
                conds.push(Fact {
                    expr: format!("case {label}: {}", text(e, plan)),
                    value: holds.to_string(),
                    holds: Some(holds),
                });
                if holds {
                    break;
                }
            }
        }
        TagBody::Buckets { of, .. } => collect(of, plan, &row, as_of, &mut facts, &mut conds),
        TagBody::External => {}
    }
    let value = show(&tags[tag]);
    let mut summary: Vec<String> = conds
        .iter()
        .filter(|c| c.holds.is_some())
        .map(|c| {
            format!(
                "{} {}",
                c.expr,
                if c.holds == Some(true) { "✓" } else { "✗" }
            )
        })
        .collect();
    if summary.is_empty() {
        summary = facts
            .iter()
            .map(|f| format!("{} = {}", f.expr, f.value))
            .collect();
    }
    facts.extend(conds);
    Explanation {
        tag: target.name.clone(),
        summary: format!("{} → {value}", summary.join(", ")),
        value,
        as_of,
        facts,
    }
}

fn collect(
    e: &Expr,
    plan: &Plan,
    row: &OneRow<'_>,
    as_of: i64,
    facts: &mut Vec<Fact>,
    conds: &mut Vec<Fact>,
) {
    let tz = plan.time_zone;
    match e {
        Expr::Agg(_) | Expr::Tag(_) | Expr::Trait { .. } => {
            let expr = text(e, plan);
            if !facts.iter().any(|f| f.expr == expr) {
                facts.push(Fact {
                    expr,
                    value: show(&eval_scalar(e, row, as_of, tz)),
                    holds: None,
                });
            }
        }
        Expr::And(xs) | Expr::Or(xs) => xs
            .iter()
            .for_each(|x| collect(x, plan, row, as_of, facts, conds)),
        Expr::Not(x) => collect(x, plan, row, as_of, facts, conds),
        Expr::Cmp(op, a, b) => {
            collect(a, plan, row, as_of, facts, conds);
            collect(b, plan, row, as_of, facts, conds);
            let (va, vb) = (
                eval_scalar(a, row, as_of, tz),
                eval_scalar(b, row, as_of, tz),
            );
            let holds = eval_scalar(e, row, as_of, tz).truthy();
            let op_text = op.symbol();
            conds.push(Fact {
                expr: format!(
                    "{} = {} {op_text} {}",
                    text(a, plan),
                    show(&va),
                    show_side(b, &vb, plan)
                ),
                value: holds.to_string(),
                holds: Some(holds),
            });
        }
        Expr::In { expr, .. } | Expr::Between { expr, .. } | Expr::IsNull { expr, .. } => {
            collect(expr, plan, row, as_of, facts, conds);
            let v = eval_scalar(expr, row, as_of, tz);
            let holds = eval_scalar(e, row, as_of, tz).truthy();
            conds.push(Fact {
                expr: format!("{} = {} ({})", text(expr, plan), show(&v), e),
                value: holds.to_string(),
                holds: Some(holds),
            });
        }
        Expr::Arith(_, a, b) => {
            collect(a, plan, row, as_of, facts, conds);
            collect(b, plan, row, as_of, facts, conds);
        }
        Expr::Call(_, args) => args
            .iter()
            .for_each(|x| collect(x, plan, row, as_of, facts, conds)),
        Expr::Neg(x) => collect(x, plan, row, as_of, facts, conds),
        _ => {}
    }
}

fn show_side(e: &Expr, v: &Value, plan: &Plan) -> String {
    match e {
        Expr::Lit(_) => show(v),
        _ => format!("{} ({})", text(e, plan), show(v)),
    }
}
