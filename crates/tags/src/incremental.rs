//! Which tags can be maintained incrementally (`refresh: realtime`).
//!
//! The real-time engine keeps, per profile, the state of every aggregate a realtime tag reads
//! and re-evaluates the tag when an event, a trait change or the passing of time changes one
//! of its inputs. That gives the batch value for the same events and `as_of` only when:
//! - the value depends on the profile alone: quantile buckets depend on everybody's values
//!   (threshold buckets are fine), and external tags are loaded, not computed;
//! - every tag it reads is realtime too (a batch tag's stored value would be stale);
//! - time enters only through the step functions `days_since`, `hours_since` and
//!   `calendar_days_since` in profile scope (the engine schedules the next step), never as a
//!   bare `now()` and never inside an aggregate's filter or argument (the event set would
//!   change with every millisecond).
//!
//! [`check`] names the first part that breaks a rule.

use crate::ir::{BucketScheme, Expr, Func, Plan, TagBody};

/// Why a tag cannot be realtime, or `Ok` when it can. `realtime(name)` tells whether another
/// tag of the plan is maintained in real time.
pub fn check(plan: &Plan, tag: usize, realtime: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let Some(t) = plan.tags.get(tag) else {
        return Err(format!("no tag at index {tag}"));
    };
    let exprs: Vec<&Expr> = match &t.body {
        TagBody::External => {
            return Err("external tags are loaded from files, not computed; \
                 give them `refresh: daily` and load them with `portrait tags load`"
                .into())
        }
        TagBody::Buckets {
            scheme: BucketScheme::Quantiles(n),
            ..
        } => {
            return Err(format!(
                "`quantiles: {n}` cut points depend on every profile's value; use fixed \
                 `thresholds` for a realtime tag, or refresh it in batch"
            ))
        }
        TagBody::Buckets { of, .. } => vec![of],
        TagBody::Rule(e) | TagBody::Metric(e) => vec![e],
        TagBody::Stage(cases) => cases.iter().map(|(_, e)| e).collect(),
    };
    for e in exprs {
        profile_scope(plan, e, realtime)?;
    }
    Ok(())
}

/// Whether `e` reads the computation's instant (directly or through a step function).
pub fn reads_now(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| {
        if matches!(
            x,
            Expr::AsOf
                | Expr::Call(
                    Func::DaysSince | Func::HoursSince | Func::CalendarDaysSince,
                    _
                )
        ) {
            found = true;
        }
    });
    found
}

fn profile_scope(plan: &Plan, e: &Expr, realtime: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match e {
        Expr::AsOf => Err("`now()` used directly changes value every millisecond; \
             compare through days_since(…) or hours_since(…) instead"
            .into()),
        Expr::Tag(i) => {
            let name = plan.tags.get(*i).map_or("?", |t| t.name.as_str());
            if realtime(name) {
                Ok(())
            } else {
                Err(format!(
                    "reads `tag.{name}`, which is not realtime; make it realtime too or \
                     refresh this tag in batch"
                ))
            }
        }
        Expr::Agg(i) => {
            let Some(a) = plan.aggregates.get(*i) else {
                return Ok(());
            };
            for part in a.filter.iter().chain(a.arg.iter()) {
                if reads_now(part) {
                    return Err(format!(
                        "the event filter or argument `{part}` depends on now(); an event's \
                         membership must not change with time"
                    ));
                }
            }
            Ok(())
        }
        Expr::Call(Func::DaysSince | Func::HoursSince | Func::CalendarDaysSince, args) => {
            // The step function's argument is itself profile scope; `now()` inside it is not.
            for a in args {
                profile_scope(plan, a, realtime)?;
            }
            Ok(())
        }
        Expr::Not(a) | Expr::Neg(a) => profile_scope(plan, a, realtime),
        Expr::And(v) | Expr::Or(v) | Expr::Call(_, v) => {
            v.iter().try_for_each(|x| profile_scope(plan, x, realtime))
        }
        Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
            profile_scope(plan, a, realtime)?;
            profile_scope(plan, b, realtime)
        }
        Expr::In { expr, .. } | Expr::IsNull { expr, .. } => profile_scope(plan, expr, realtime),
        Expr::Between {
            expr, low, high, ..
        } => {
            profile_scope(plan, expr, realtime)?;
            profile_scope(plan, low, realtime)?;
            profile_scope(plan, high, realtime)
        }
        Expr::Lit(_)
        | Expr::Trait { .. }
        | Expr::Profile(_)
        | Expr::Event(_)
        | Expr::Property { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, parse_defs, Known};

    fn reason(yaml: &str, tag: &str) -> Result<(), String> {
        let defs = parse_defs(yaml, "t.yaml").expect("parses");
        let plan = compile(&defs, &Known::default()).expect("compiles").plan;
        let i = plan.tag_index(tag).expect("tag");
        let realtime = |n: &str| n != "batch_tag";
        check(&plan, i, &realtime)
    }

    #[test]
    fn names_the_part_that_prevents_realtime() {
        let ok = "name: a\nrule: count(event = \"X\", within 7d) >= 1 and days_since(last(event = \"Y\")) > 30\n";
        assert_eq!(reason(ok, "a"), Ok(()));
        let quantiles = "name: a\nkind: buckets\nof: count(event = \"X\")\nquantiles: 5\n";
        assert!(reason(quantiles, "a")
            .expect_err("refused")
            .contains("quantiles: 5"));
        let thresholds = "name: a\nkind: buckets\nof: count(event = \"X\")\nthresholds: [1, 5]\n";
        assert_eq!(reason(thresholds, "a"), Ok(()));
        let external = "name: a\nkind: external\nvalue_type: string\nkey: member_id\n";
        assert!(reason(external, "a")
            .expect_err("refused")
            .contains("external"));
        let reads_batch = "name: batch_tag\nkind: metric\nvalue: count(event = \"X\")\n---\nname: a\nrule: tag.batch_tag > 1\n";
        assert!(reason(reads_batch, "a")
            .expect_err("refused")
            .contains("tag.batch_tag"));
        let bare_now = "name: a\nrule: last(event = \"X\") < now()\n";
        assert!(reason(bare_now, "a")
            .expect_err("refused")
            .contains("now()"));
        let now_in_filter =
            "name: a\nrule: count(event = \"X\" and days_since(timestamp) < 3) >= 1\n";
        assert!(reason(now_in_filter, "a")
            .expect_err("refused")
            .contains("depends on now()"));
    }
}
