//! A plan's aggregates as one wide SQL statement, in three dialects.
//!
//! Shape (one aggregate per line, each with a comment naming its slot):
//!
//! ```sql
//! SELECT
//!   m.survivor AS id,
//!   count(*) FILTER (WHERE <window> AND <filter>) AS a0, -- slot 0: count, within 7d
//!   …
//! FROM events e
//! JOIN profile_map m ON e.profile_id = m.id
//! WHERE m.survivor IS NOT NULL
//!   AND (<date partitions of the union of windows>)
//!   AND <ts> > <lo> AND <ts> <= <hi>
//! GROUP BY m.survivor
//! ```
//!
//! `events` is the lake's events directory with the hive partition column `date`, `profile_map`
//! its `profile_map.parquet`. Instants are BIGINT epoch ms throughout (`timestamp` is
//! converted once per use), so windows are integer compares. Booleans are two-valued: every
//! condition is wrapped so that null reads as false.
//!
//! Properties: DataFusion calls the UDFs registered by [`crate::datafusion`]
//! (`json_num(properties, 'a.b')`, `json_str`, `json_bool`, `json_time`); DuckDB uses
//! `json_extract_string` + `TRY_CAST`; ClickHouse `JSONExtractRaw` / `JSONExtractString` /
//! `JSONType`. ClickHouse uses the `-If` / `-OrNull` combinators instead of `FILTER`.
//!
//! Not expressible (an error naming the slot): `most_frequent` (all dialects; no exact tie
//! rule), `calendar_days_since` and Time-typed properties (DuckDB, ClickHouse), `least` /
//! `greatest` (ClickHouse), profile-scope nodes.

use std::fmt::Write as _;

use portrait_tags::ir::{AggFunc, ArithOp, CmpOp, EventField, Expr, Func, Plan, Window};
use portrait_tags::value::{Type, Value};

use crate::error::BatchError;
use crate::window;

/// SQL dialect of [`to_sql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Apache DataFusion (with this crate's JSON UDFs registered).
    DataFusion,
    /// DuckDB (`read_parquet(…, hive_partitioning = true)` as `events`).
    DuckDb,
    /// ClickHouse / chDB (`use_hive_partitioning = 1`).
    ClickHouse,
}

struct Gen {
    d: Dialect,
    as_of: i64,
    slot: usize,
}

fn unsupported(slot: usize, what: &str, d: Dialect) -> BatchError {
    BatchError::Unsupported(format!(
        "aggregate slot {slot}: {what} has no {d:?} SQL form"
    ))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Gen {
    fn ts(&self) -> &'static str {
        match self.d {
            Dialect::DataFusion => "CAST(e.\"timestamp\" AS BIGINT)",
            Dialect::DuckDb => "epoch_ms(e.\"timestamp\")",
            Dialect::ClickHouse => "toUnixTimestamp64Milli(e.\"timestamp\")",
        }
    }

    fn num_lit(&self, x: f64) -> String {
        let t = format!("{x:?}");
        match self.d {
            Dialect::DuckDb => format!("CAST({t} AS DOUBLE)"),
            _ => t,
        }
    }

    fn lit(&self, v: &Value) -> String {
        match v {
            Value::Null => "NULL".into(),
            Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            Value::Num(x) => self.num_lit(*x),
            Value::Str(s) => quote_str(s),
            Value::Time(t) => format!("{t}"),
        }
    }

    fn prop(&self, path: &[String], ty: Type) -> Result<String, BatchError> {
        let d = self.d;
        match d {
            Dialect::DataFusion => {
                let f = match ty {
                    Type::Number => "json_num",
                    Type::Str => "json_str",
                    Type::Bool => "json_bool",
                    Type::Time => "json_time",
                    Type::Null => return Ok("NULL".into()),
                };
                Ok(format!("{f}(e.properties, {})", quote_str(&path.join("."))))
            }
            Dialect::DuckDb => {
                let mut p = String::from("$");
                for seg in path {
                    let _ = write!(p, ".\"{}\"", seg.replace('"', "\\\""));
                }
                let p = quote_str(&p);
                let x = format!("json_extract_string(e.properties, {p})");
                let t = format!("json_type(e.properties, {p})");
                match ty {
                    Type::Number => Ok(format!("TRY_CAST({x} AS DOUBLE)")),
                    Type::Str => Ok(format!(
                        "CASE WHEN {t} IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE') THEN {x} END"
                    )),
                    Type::Bool => Ok(format!("CASE WHEN {t} = 'BOOLEAN' THEN {x} = 'true' END")),
                    Type::Time => Err(unsupported(self.slot, "a Time-typed property", d)),
                    Type::Null => Ok("NULL".into()),
                }
            }
            Dialect::ClickHouse => {
                let args: Vec<String> = path.iter().map(|s| quote_str(s)).collect();
                let a = format!("e.properties, {}", args.join(", "));
                let t = format!("JSONType({a})");
                match ty {
                    Type::Number => Ok(format!(
                        "toFloat64OrNull(trim(BOTH '\"' FROM JSONExtractRaw({a})))"
                    )),
                    Type::Str => Ok(format!(
                        "multiIf({t} = 'String', JSONExtractString({a}), {t} IN ('Int64', 'UInt64', 'Double'), JSONExtractRaw({a}), NULL)"
                    )),
                    Type::Bool => Ok(format!("if({t} = 'Bool', JSONExtractBool({a}) = 1, NULL)")),
                    Type::Time => Err(unsupported(self.slot, "a Time-typed property", d)),
                    Type::Null => Ok("NULL".into()),
                }
            }
        }
    }

    /// A never-null boolean.
    fn cond(&self, e: &Expr) -> Result<String, BatchError> {
        Ok(match e {
            Expr::Not(a) => format!("(NOT {})", self.cond(a)?),
            Expr::And(v) if v.is_empty() => "TRUE".into(),
            Expr::Or(v) if v.is_empty() => "FALSE".into(),
            Expr::And(v) | Expr::Or(v) => {
                let op = if matches!(e, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts = v
                    .iter()
                    .map(|x| self.cond(x))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(op))
            }
            Expr::Cmp(op, a, b) => {
                let (ta, tb) = (a.ty(), b.ty());
                if ta != tb && ta != Type::Null && tb != Type::Null {
                    return Ok("FALSE".into());
                }
                let o = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("COALESCE({} {o} {}, FALSE)", self.val(a)?, self.val(b)?)
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let ty = expr.ty();
                let items: Vec<String> = list
                    .iter()
                    .filter(|v| Expr::Lit((*v).clone()).ty() == ty && !v.is_null())
                    .map(|v| self.lit(v))
                    .collect();
                let x = self.val(expr)?;
                if items.is_empty() {
                    return Ok(if *negated {
                        format!("({x} IS NOT NULL)")
                    } else {
                        "FALSE".into()
                    });
                }
                let not = if *negated { "NOT " } else { "" };
                format!("COALESCE({x} {not}IN ({}), FALSE)", items.join(", "))
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let (x, l, h) = (self.val(expr)?, self.val(low)?, self.val(high)?);
                if *negated {
                    format!(
                        "({x} IS NOT NULL AND {l} IS NOT NULL AND {h} IS NOT NULL AND NOT ({x} BETWEEN {l} AND {h}))"
                    )
                } else {
                    format!("COALESCE({x} BETWEEN {l} AND {h}, FALSE)")
                }
            }
            Expr::IsNull { expr, negated } => {
                let not = if *negated { "NOT " } else { "" };
                format!("({} IS {not}NULL)", self.val(expr)?)
            }
            Expr::Call(Func::Contains | Func::StartsWith | Func::EndsWith, args) => {
                let f = match e {
                    Expr::Call(f, _) => *f,
                    _ => Func::Contains,
                };
                let a = self.val(args.first().unwrap_or(&Expr::Lit(Value::Null)))?;
                let b = self.val(args.get(1).unwrap_or(&Expr::Lit(Value::Null)))?;
                let inner = match (self.d, f) {
                    (Dialect::DataFusion, Func::Contains) => format!("strpos({a}, {b}) > 0"),
                    (Dialect::DuckDb, Func::Contains) => format!("contains({a}, {b})"),
                    (Dialect::ClickHouse, Func::Contains) => format!("position({a}, {b}) > 0"),
                    (Dialect::ClickHouse, Func::StartsWith) => format!("startsWith({a}, {b})"),
                    (Dialect::ClickHouse, _) => format!("endsWith({a}, {b})"),
                    (_, Func::StartsWith) => format!("starts_with({a}, {b})"),
                    _ => format!("ends_with({a}, {b})"),
                };
                format!("COALESCE({inner}, FALSE)")
            }
            Expr::Lit(Value::Bool(b)) => if *b { "TRUE" } else { "FALSE" }.into(),
            other => format!("COALESCE({}, FALSE)", self.val(other)?),
        })
    }

    /// A value (may be null).
    fn val(&self, e: &Expr) -> Result<String, BatchError> {
        let d = self.d;
        Ok(match e {
            Expr::Lit(v) => self.lit(v),
            Expr::AsOf => format!("{}", self.as_of),
            Expr::Agg(_) | Expr::Tag(_) | Expr::Trait { .. } | Expr::Profile(_) => {
                return Err(unsupported(
                    self.slot,
                    "a profile-scope value in an event expression",
                    d,
                ))
            }
            Expr::Event(f) => match f {
                EventField::Name => "e.event".into(),
                EventField::Type => "e.\"type\"".into(),
                EventField::Source => "e.source_name".into(),
                EventField::Timestamp => self.ts().into(),
            },
            Expr::Property { path, ty } => self.prop(path, *ty)?,
            Expr::Not(_)
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Cmp(..)
            | Expr::In { .. }
            | Expr::Between { .. }
            | Expr::IsNull { .. }
            | Expr::Call(Func::Contains | Func::StartsWith | Func::EndsWith, _) => self.cond(e)?,
            Expr::Arith(op, a, b) => {
                let (a, b) = (self.val(a)?, self.val(b)?);
                match op {
                    ArithOp::Add => format!("({a} + {b})"),
                    ArithOp::Sub => format!("({a} - {b})"),
                    ArithOp::Mul => format!("({a} * {b})"),
                    ArithOp::Div => format!("({a} / NULLIF({b}, 0))"),
                    ArithOp::Rem => format!("({a} % NULLIF({b}, 0))"),
                }
            }
            Expr::Neg(a) => format!("(- {})", self.val(a)?),
            Expr::Call(f, args) => {
                let vals = args
                    .iter()
                    .map(|a| self.val(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let a0 = vals.first().cloned().unwrap_or_else(|| "NULL".into());
                let since =
                    |unit: &str| format!("floor(CAST(({} - {a0}) AS DOUBLE) / {unit})", self.as_of);
                match f {
                    Func::DaysSince => since("86400000.0"),
                    Func::HoursSince => since("3600000.0"),
                    Func::CalendarDaysSince => {
                        return Err(unsupported(self.slot, "calendar_days_since", d))
                    }
                    Func::Coalesce => format!("COALESCE({})", vals.join(", ")),
                    Func::Lower => format!("lower({a0})"),
                    Func::Upper => format!("upper({a0})"),
                    Func::Length => match d {
                        Dialect::ClickHouse => format!("toFloat64(lengthUTF8({a0}))"),
                        _ => format!("CAST(character_length({a0}) AS DOUBLE)"),
                    },
                    Func::Concat => match d {
                        Dialect::ClickHouse => {
                            let parts: Vec<String> =
                                vals.iter().map(|v| format!("ifNull({v}, '')")).collect();
                            format!("concat({})", parts.join(", "))
                        }
                        _ => format!("concat({})", vals.join(", ")),
                    },
                    Func::Abs => format!("abs({a0})"),
                    Func::Floor => format!("floor({a0})"),
                    Func::Ceil => format!("ceil({a0})"),
                    Func::Round => {
                        let digits = match args.get(1) {
                            None => None,
                            Some(Expr::Lit(Value::Num(x))) => Some(*x as i32),
                            Some(_) => {
                                return Err(unsupported(
                                    self.slot,
                                    "round with non-literal digits",
                                    d,
                                ))
                            }
                        };
                        match (d, digits) {
                            (Dialect::ClickHouse, dg) => {
                                let p = format!("{:?}", 10f64.powi(dg.unwrap_or(0)));
                                format!(
                                    "(if({a0} >= 0, floor({a0} * {p} + 0.5), -floor(-{a0} * {p} + 0.5)) / {p})"
                                )
                            }
                            (_, None) => format!("round({a0})"),
                            (_, Some(dg)) => format!("round({a0}, {dg})"),
                        }
                    }
                    Func::Least | Func::Greatest => {
                        if d == Dialect::ClickHouse {
                            return Err(unsupported(self.slot, "least/greatest", d));
                        }
                        let n = if *f == Func::Least {
                            "least"
                        } else {
                            "greatest"
                        };
                        format!("{n}({})", vals.join(", "))
                    }
                    Func::Contains | Func::StartsWith | Func::EndsWith => self.cond(e)?,
                }
            }
        })
    }
}

fn window_text(w: Window) -> String {
    match w {
        Window::All => "all time".into(),
        Window::Rolling { ms } => format!("within {ms} ms"),
        Window::Ago { from_ms, to_ms } => format!("between {from_ms} and {to_ms} ms ago"),
        Window::Calendar { days } => format!("within {days} calendar days"),
    }
}

/// The plan's aggregates as one `SELECT … GROUP BY m.survivor` in `dialect`; column `a{i}` is
/// slot `i` (`count`/`count_distinct` BIGINT, `sum`/`avg` DOUBLE, times BIGINT epoch ms).
pub fn to_sql(plan: &Plan, as_of_ms: i64, dialect: Dialect) -> Result<String, BatchError> {
    let mut g = Gen {
        d: dialect,
        as_of: as_of_ms,
        slot: 0,
    };
    let ts = g.ts();
    let mut lines = vec!["  m.survivor AS id".to_string()];
    let mut comments = vec![String::new()];
    let mut day_ranges = Vec::new();
    let (mut min_lo, mut max_hi) = (i64::MAX, i64::MIN);
    for (i, agg) in plan.aggregates.iter().enumerate() {
        g.slot = i;
        let (lo, hi) = window::bounds(agg.window, as_of_ms, plan.time_zone);
        let days = window::partition_days(lo, hi);
        let mut conds = Vec::new();
        match days {
            Some(r) => {
                day_ranges.push(r);
                min_lo = min_lo.min(lo);
                max_hi = max_hi.max(hi);
                if lo != i64::MIN {
                    conds.push(format!("{ts} > {lo}"));
                }
                conds.push(format!("{ts} <= {hi}"));
            }
            None => conds.push("FALSE".into()),
        }
        if let Some(f) = &agg.filter {
            conds.push(g.cond(f)?);
        }
        let arg = match (&agg.arg, agg.func) {
            (_, AggFunc::Count | AggFunc::FirstTime | AggFunc::LastTime) => None,
            (Some(a), _) => Some(g.val(a)?),
            (None, f) => {
                return Err(BatchError::Unsupported(format!(
                    "aggregate slot {i}: {f:?} without an argument"
                )))
            }
        };
        let a = arg.clone().unwrap_or_default();
        if matches!(agg.func, AggFunc::First | AggFunc::Last) {
            conds.push(format!("{a} IS NOT NULL"));
        }
        let c = conds.join(" AND ");
        let ch = dialect == Dialect::ClickHouse;
        let expr = match agg.func {
            AggFunc::MostFrequent => {
                return Err(unsupported(i, "most_frequent", dialect));
            }
            AggFunc::Count if ch => format!("countIf({c})"),
            AggFunc::Count => format!("count(*) FILTER (WHERE {c})"),
            AggFunc::Sum if ch => format!("coalesce(sumIf({a}, {c}), 0)"),
            AggFunc::Sum => format!("COALESCE(sum({a}) FILTER (WHERE {c}), 0.0)"),
            AggFunc::CountDistinct if ch => format!("uniqExactIf({a}, {c})"),
            AggFunc::CountDistinct => format!("count(DISTINCT CASE WHEN {c} THEN {a} END)"),
            AggFunc::Avg | AggFunc::Min | AggFunc::Max | AggFunc::FirstTime | AggFunc::LastTime => {
                let (f, x) = match agg.func {
                    AggFunc::Avg => ("avg", a.as_str()),
                    AggFunc::Min => ("min", a.as_str()),
                    AggFunc::Max => ("max", a.as_str()),
                    AggFunc::FirstTime => ("min", ts),
                    _ => ("max", ts),
                };
                if ch {
                    format!("{f}IfOrNull({x}, {c})")
                } else {
                    format!("{f}({x}) FILTER (WHERE {c})")
                }
            }
            AggFunc::First | AggFunc::Last => {
                let last = agg.func == AggFunc::Last;
                match dialect {
                    Dialect::ClickHouse => {
                        let f = if last {
                            "argMaxIfOrNull"
                        } else {
                            "argMinIfOrNull"
                        };
                        format!("{f}({a}, tuple({ts}, e.\"offset\"), {c})")
                    }
                    Dialect::DataFusion => {
                        let dir = if last { "DESC" } else { "ASC" };
                        format!("first_value({a} ORDER BY {ts} {dir}, e.\"offset\" {dir}) FILTER (WHERE {c})")
                    }
                    Dialect::DuckDb => {
                        let f = if last { "arg_max" } else { "arg_min" };
                        format!("{f}({a}, ({ts}, e.\"offset\")) FILTER (WHERE {c})")
                    }
                }
            }
        };
        lines.push(format!("  {expr} AS a{i}"));
        comments.push(format!(
            " -- slot {i}: {:?}, {}",
            agg.func,
            window_text(agg.window)
        ));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- portrait batch aggregates: {} slots, as_of {as_of_ms} ms",
        plan.aggregates.len()
    );
    out.push_str("SELECT\n");
    let n = lines.len();
    for (k, (l, c)) in lines.iter().zip(&comments).enumerate() {
        let comma = if k + 1 < n { "," } else { "" };
        let _ = writeln!(out, "{l}{comma}{c}");
    }
    out.push_str(
        "FROM events e\nJOIN profile_map m ON e.profile_id = m.id\nWHERE m.survivor IS NOT NULL\n",
    );
    let days = window::union_days(day_ranges);
    if days.is_empty() {
        out.push_str("  AND FALSE\n");
    } else {
        let parts: Vec<String> = days
            .iter()
            .map(|(a, b)| {
                let hi = window::day_string(*b).unwrap_or_else(|| "9999-12-31".into());
                match window::day_string(*a) {
                    Some(lo) if *a != i64::MIN => format!("e.\"date\" BETWEEN '{lo}' AND '{hi}'"),
                    _ => format!("e.\"date\" <= '{hi}'"),
                }
            })
            .collect();
        let _ = writeln!(out, "  AND ({})", parts.join(" OR "));
        if min_lo != i64::MIN {
            let _ = writeln!(out, "  AND {ts} > {min_lo}");
        }
        let _ = writeln!(out, "  AND {ts} <= {max_hi}");
    }
    out.push_str("GROUP BY m.survivor\n");
    Ok(out)
}
