//! A plan's aggregates as one wide SQL statement ([`to_sql`]), and its whole tags on top of
//! that statement ([`tags_sql`]), in three dialects.
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

use portrait_tags::ir::{
    AggFunc, Aggregate, ArithOp, BucketScheme, CmpOp, EventField, Expr, Func, Plan, ProfileField,
    TagBody, Window,
};
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

impl Dialect {
    /// The names [`Dialect::parse`] accepts, for error messages.
    pub const NAMES: &'static str = "datafusion, duckdb, clickhouse";

    /// A dialect by name: `datafusion`, `duckdb`, `clickhouse` (or `chdb`).
    pub fn parse(name: &str) -> Option<Dialect> {
        match name {
            "datafusion" => Some(Dialect::DataFusion),
            "duckdb" => Some(Dialect::DuckDb),
            "clickhouse" | "chdb" => Some(Dialect::ClickHouse),
            _ => None,
        }
    }
}

struct Gen<'p> {
    d: Dialect,
    as_of: i64,
    /// What is being generated, for errors: `aggregate slot 3`, `tag lifecycle`.
    ctx: String,
    /// Profile scope (tag bodies): the plan, for the types of aggregate and tag slots. `None`
    /// in event scope (aggregate filters and arguments).
    plan: Option<&'p Plan>,
    /// Profile scope: the slot of `first_seen` (`last_seen` is the next one), when the plan
    /// reads them.
    seen_slot: Option<usize>,
}

fn unsupported_in(ctx: &str, what: &str, d: Dialect) -> BatchError {
    BatchError::Unsupported(format!("{ctx}: {what} has no {d:?} SQL form"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Gen<'_> {
    fn unsupported(&self, what: &str) -> BatchError {
        unsupported_in(&self.ctx, what, self.d)
    }

    /// The static type of `e` (aggregate and tag slots looked up in profile scope).
    fn ty(&self, e: &Expr) -> Type {
        match self.plan {
            Some(p) => p.type_of(e),
            None => e.ty(),
        }
    }

    /// `x` as a DOUBLE, keeping null (ClickHouse's `CAST` refuses null into a plain type).
    fn dbl(&self, x: &str) -> String {
        match self.d {
            Dialect::ClickHouse => format!("toFloat64({x})"),
            _ => format!("CAST({x} AS DOUBLE)"),
        }
    }

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
                    Type::Time => Err(self.unsupported("a Time-typed property")),
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
                    Type::Time => Err(self.unsupported("a Time-typed property")),
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
                let (ta, tb) = (self.ty(a), self.ty(b));
                if ta != tb && ta != Type::Null && tb != Type::Null {
                    return Ok("FALSE".into());
                }
                // SQL spells "not equal" `<>`; the rest as the DSL does.
                let o = match op {
                    CmpOp::Ne => "<>",
                    other => other.symbol(),
                };
                format!("COALESCE({} {o} {}, FALSE)", self.val(a)?, self.val(b)?)
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let ty = self.ty(expr);
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
            Expr::Agg(i) if self.plan.is_some() => format!("p.v{i}"),
            Expr::Tag(i) if self.plan.is_some() => format!("p.t{i}"),
            Expr::Profile(f) if self.plan.is_some() => match self.seen_slot {
                Some(k) => format!(
                    "p.v{}",
                    if *f == ProfileField::FirstSeen {
                        k
                    } else {
                        k + 1
                    }
                ),
                None => return Err(self.unsupported("first_seen/last_seen")),
            },
            Expr::Trait { path, .. } if self.plan.is_some() => {
                return Err(self.unsupported(&format!(
                    "traits.{} (tags_sql does not join profiles.parquet)",
                    path.join(".")
                )))
            }
            Expr::Agg(_) | Expr::Tag(_) | Expr::Trait { .. } | Expr::Profile(_) => {
                return Err(self.unsupported("a profile-scope value in an event expression"))
            }
            Expr::Event(_) | Expr::Property { .. } if self.plan.is_some() => {
                return Err(self.unsupported("an event field outside an aggregate"))
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
                let since = |unit: &str| {
                    let diff = self.dbl(&format!("({} - {a0})", self.as_of));
                    format!("floor({diff} / {unit})")
                };
                match f {
                    Func::DaysSince => since("86400000.0"),
                    Func::HoursSince => since("3600000.0"),
                    Func::CalendarDaysSince => return Err(self.unsupported("calendar_days_since")),
                    Func::Coalesce => format!("COALESCE({})", vals.join(", ")),
                    Func::Lower => format!("lower({a0})"),
                    Func::Upper => format!("upper({a0})"),
                    Func::Length => match d {
                        Dialect::ClickHouse => format!("toFloat64(lengthUTF8({a0}))"),
                        _ => self.dbl(&format!("character_length({a0})")),
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
                                return Err(self.unsupported("round with non-literal digits"))
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
                            return Err(self.unsupported("least/greatest"));
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
        ctx: String::new(),
        plan: None,
        seen_slot: None,
    };
    let ts = g.ts();
    let mut lines = vec!["  m.survivor AS id".to_string()];
    let mut comments = vec![String::new()];
    let mut day_ranges = Vec::new();
    let (mut min_lo, mut max_hi) = (i64::MAX, i64::MIN);
    for (i, agg) in plan.aggregates.iter().enumerate() {
        g.ctx = format!("aggregate slot {i}");
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
                return Err(g.unsupported("most_frequent"));
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

// ---------------------------------------------------------------------------------------------
// Whole tags.

/// The expressions of a tag body.
fn body_exprs(body: &TagBody) -> Vec<&Expr> {
    match body {
        TagBody::Rule(e) | TagBody::Metric(e) => vec![e],
        TagBody::Stage(cases) => cases.iter().map(|(_, e)| e).collect(),
        TagBody::Buckets { of, .. } => vec![of],
        TagBody::External => Vec::new(),
    }
}

/// One column added at a level: its SQL and its name.
struct Item {
    sql: String,
    alias: String,
    comment: String,
}

/// Every tag of `plan`, in plan order, as one SQL statement in `dialect`: one row per live
/// profile (`profile_map.survivor = id`) ordered by `id`, one column per tag named after it.
///
/// Shape: the fused aggregate query of [`to_sql`] as the CTE `agg`; `base` gives every live
/// profile its aggregate slots (`v{i}`, DOUBLE for numbers, BIGINT epoch ms for instants; 0
/// for `count`, `sum`, `count_distinct` without events); then one CTE per dependency level
/// (`l1`, `l2`, …) adds the tags whose inputs exist, each as `t{i}`, so a tag reading another
/// tag reads an earlier column. Values follow the crate semantics of `portrait_tags`:
///
/// - rules are two-valued booleans (a comparison with null is false);
/// - stages are `CASE WHEN … THEN 'label' … END` (null when no case holds);
/// - metrics are the expression (arithmetic with null is null, division by zero is null);
/// - buckets: the bucketed value is first a column `o{i}`; thresholds count the thresholds
///   `≤ x`; quantiles use `U` = the number of non-null values `≤ x` (a window count over the
///   population ordered by `x`, peers included) and `N` = all non-null values: with the cut
///   points `c_k = v[floor(k·N/n)]` of `portrait_tags::ir::BucketScheme`,
///   `#{k : x ≥ c_k} = floor((U·n − 1) / N)`, so the bucket is `1 + floor((U·n − 1) / N)`
///   (`n + 1 − b` when reversed) without a self-join;
/// - `first_seen` / `last_seen` are two more aggregate slots (all-time first/last event time).
///
/// ClickHouse: the statement ends with `SETTINGS join_use_nulls = 1` (an unmatched left join
/// must give null, not 0); append further settings after a comma.
///
/// Errors ([`BatchError::Unsupported`], naming the tag or slot): external tags, traits (this
/// SQL does not join `profiles.parquet`), and whatever [`to_sql`] cannot express.
pub fn tags_sql(plan: &Plan, as_of_ms: i64, dialect: Dialect) -> Result<String, BatchError> {
    // Checks, and whether first_seen / last_seen are read.
    let mut reads_seen = false;
    for (i, tag) in plan.tags.iter().enumerate() {
        if matches!(tag.body, TagBody::External) {
            return Err(BatchError::Unsupported(format!(
                "tag {}: an external tag has no SQL form (its values are loaded, not computed)",
                tag.name
            )));
        }
        let mut bad_ref = None;
        for e in body_exprs(&tag.body) {
            e.walk(&mut |x| match x {
                Expr::Profile(_) => reads_seen = true,
                Expr::Tag(j) if *j >= i => bad_ref = Some(*j),
                _ => {}
            });
        }
        if let Some(j) = bad_ref {
            return Err(BatchError::Unsupported(format!(
                "tag {}: reads tag slot {j}, which does not come before it",
                tag.name
            )));
        }
    }
    let mut scan = plan.clone();
    let seen_slot = if reads_seen {
        let k = scan.aggregates.len();
        for func in [AggFunc::FirstTime, AggFunc::LastTime] {
            scan.aggregates.push(Aggregate {
                func,
                arg: None,
                filter: None,
                window: Window::All,
            });
        }
        Some(k)
    } else {
        None
    };
    let agg_sql = to_sql(&scan, as_of_ms, dialect)?;
    let mut g = Gen {
        d: dialect,
        as_of: as_of_ms,
        ctx: String::new(),
        plan: Some(&scan),
        seen_slot,
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- portrait batch tags: {} tags over {} aggregate slots, as_of {as_of_ms} ms",
        plan.tags.len(),
        scan.aggregates.len()
    );
    out.push_str("WITH agg AS (\n");
    for line in agg_sql.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("),\nbase AS (\n  SELECT\n    l.id AS id");
    for (i, a) in scan.aggregates.iter().enumerate() {
        let col = format!("g.a{i}");
        let v = match a.func {
            AggFunc::Count | AggFunc::Sum | AggFunc::CountDistinct => {
                g.dbl(&format!("COALESCE({col}, 0)"))
            }
            _ => match a.result_type() {
                Type::Number => g.dbl(&col),
                _ => col,
            },
        };
        let _ = write!(out, ",\n    {v} AS v{i}");
    }
    out.push_str(
        "\n  FROM profile_map l\n  LEFT JOIN agg g ON g.id = l.id\n  WHERE l.survivor = l.id\n)",
    );

    // Levels: a tag is computed one level after everything it reads; a buckets tag computes
    // its bucketed value at that level and the bucket one level later.
    let mut avail = vec![0usize; plan.tags.len()];
    let mut levels: Vec<Vec<Item>> = Vec::new();
    let at = |levels: &mut Vec<Vec<Item>>, k: usize, item: Item| {
        while levels.len() < k {
            levels.push(Vec::new());
        }
        if let Some(l) = levels.get_mut(k - 1) {
            l.push(item);
        }
    };
    for (i, tag) in plan.tags.iter().enumerate() {
        g.ctx = format!("tag {}", tag.name);
        let mut deps = 0;
        for e in body_exprs(&tag.body) {
            e.walk(&mut |x| {
                if let Expr::Tag(j) = x {
                    deps = deps.max(avail.get(*j).copied().unwrap_or(0));
                }
            });
        }
        let k = deps + 1;
        let kind = match &tag.body {
            TagBody::Rule(_) => "rule",
            TagBody::Stage(_) => "stage",
            TagBody::Metric(_) => "metric",
            TagBody::Buckets { .. } => "buckets",
            TagBody::External => "external",
        };
        let comment = format!(" -- tag {i}: {} ({kind})", tag.name);
        match &tag.body {
            TagBody::Rule(e) => {
                let sql = g.cond(e)?;
                at(
                    &mut levels,
                    k,
                    Item {
                        sql,
                        alias: format!("t{i}"),
                        comment,
                    },
                );
                avail[i] = k;
            }
            TagBody::Stage(cases) => {
                let mut sql = String::from("CASE");
                for (label, e) in cases {
                    let _ = write!(sql, " WHEN {} THEN {}", g.cond(e)?, quote_str(label));
                }
                sql.push_str(" END");
                if cases.is_empty() {
                    sql = "CAST(NULL AS VARCHAR)".into();
                }
                at(
                    &mut levels,
                    k,
                    Item {
                        sql,
                        alias: format!("t{i}"),
                        comment,
                    },
                );
                avail[i] = k;
            }
            TagBody::Metric(e) => {
                let sql = g.val(e)?;
                at(
                    &mut levels,
                    k,
                    Item {
                        sql,
                        alias: format!("t{i}"),
                        comment,
                    },
                );
                avail[i] = k;
            }
            TagBody::Buckets {
                of,
                scheme,
                reverse,
            } => {
                at(
                    &mut levels,
                    k,
                    Item {
                        sql: g.val(of)?,
                        alias: format!("o{i}"),
                        comment: format!(" -- tag {i}: {}, the bucketed value", tag.name),
                    },
                );
                let x = format!("p.o{i}");
                let (b, n) = match scheme {
                    BucketScheme::Thresholds(t) => {
                        let mut b = String::from("1");
                        for c in t {
                            let _ = write!(
                                b,
                                " + CASE WHEN {x} >= {} THEN 1 ELSE 0 END",
                                g.num_lit(*c)
                            );
                        }
                        (g.dbl(&format!("({b})")), t.len() + 1)
                    }
                    BucketScheme::Quantiles(n) => {
                        let n = (*n).max(1) as usize;
                        let u = format!("count({x}) OVER (ORDER BY {x})");
                        let total = format!("count({x}) OVER ()");
                        let num = g.dbl(&format!("{u} * {n} - 1"));
                        (format!("(1 + floor({num} / NULLIF({total}, 0)))"), n)
                    }
                };
                let b = if *reverse {
                    format!("({} - {b})", n + 1)
                } else {
                    b
                };
                let what = match scheme {
                    BucketScheme::Thresholds(_) => "thresholds",
                    BucketScheme::Quantiles(_) => "quantiles",
                };
                at(
                    &mut levels,
                    k + 1,
                    Item {
                        sql: format!("CASE WHEN {x} IS NULL THEN NULL ELSE {b} END"),
                        alias: format!("t{i}"),
                        comment: format!(" -- tag {i}: {} (buckets, {n} {what})", tag.name),
                    },
                );
                avail[i] = k + 1;
            }
            TagBody::External => {}
        }
    }
    let mut prev = "base".to_string();
    for (k, items) in levels.iter().enumerate() {
        let name = format!("l{}", k + 1);
        let _ = writeln!(out, ",\n{name} AS (\n  SELECT\n    p.*,");
        for (j, it) in items.iter().enumerate() {
            let comma = if j + 1 < items.len() { "," } else { "" };
            let _ = writeln!(out, "    {} AS {}{comma}{}", it.sql, it.alias, it.comment);
        }
        let _ = write!(out, "  FROM {prev} p\n)");
        prev = name;
    }
    out.push_str("\nSELECT\n  p.id AS id");
    for (i, tag) in plan.tags.iter().enumerate() {
        let _ = write!(out, ",\n  p.t{i} AS \"{}\"", tag.name.replace('"', "\"\""));
    }
    let _ = write!(out, "\nFROM {prev} p\nORDER BY id\n");
    if dialect == Dialect::ClickHouse {
        out.push_str("SETTINGS join_use_nulls = 1\n");
    }
    Ok(out)
}
