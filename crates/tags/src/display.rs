//! Pretty printing of plans and expressions, in the DSL's own syntax where possible:
//! aggregates are numbered `a0, a1, …`, tags `t0, t1, …`, JSON-typed paths show the type the
//! checker chose (`properties.revenue::number`).

use std::fmt;

use crate::compile::func_name;
use crate::ir::{
    AggFunc, Aggregate, ArithOp, BucketScheme, EventField, Expr, Plan, ProfileField, TagBody,
    Window,
};
use crate::value::{format_number, Type};

fn type_word(t: Type) -> &'static str {
    match t {
        Type::Bool => "bool",
        Type::Number => "number",
        Type::Str => "string",
        Type::Time => "time",
        Type::Null => "null",
    }
}

fn prec(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 1,
        Expr::And(_) => 2,
        Expr::Not(_) => 3,
        Expr::Cmp(..) | Expr::In { .. } | Expr::Between { .. } | Expr::IsNull { .. } => 4,
        Expr::Arith(ArithOp::Add | ArithOp::Sub, ..) => 5,
        Expr::Arith(..) => 6,
        Expr::Neg(_) => 7,
        _ => 8,
    }
}

struct P<'a>(&'a Expr, u8);

impl fmt::Display for P<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if prec(self.0) < self.1 {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, xs: &[Expr], sep: &str, min: u8) -> fmt::Result {
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{}", P(x, min))?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit(v) => write!(f, "{v}"),
            Expr::AsOf => f.write_str("now()"),
            Expr::Agg(i) => write!(f, "a{i}"),
            Expr::Tag(i) => write!(f, "t{i}"),
            Expr::Trait { path, ty } => write!(f, "traits.{}::{}", path.join("."), type_word(*ty)),
            Expr::Property { path, ty } => {
                write!(f, "properties.{}::{}", path.join("."), type_word(*ty))
            }
            Expr::Profile(ProfileField::FirstSeen) => f.write_str("first_seen"),
            Expr::Profile(ProfileField::LastSeen) => f.write_str("last_seen"),
            Expr::Event(e) => f.write_str(match e {
                EventField::Name => "event",
                EventField::Type => "type",
                EventField::Source => "source",
                EventField::Timestamp => "timestamp",
            }),
            Expr::Not(x) => write!(f, "not {}", P(x, 3)),
            Expr::And(xs) => join(f, xs, " and ", 3),
            Expr::Or(xs) => join(f, xs, " or ", 2),
            Expr::Cmp(op, a, b) => {
                write!(f, "{} {} {}", P(a, 5), op.symbol(), P(b, 5))
            }
            Expr::Arith(op, a, b) => {
                let (o, p) = match op {
                    ArithOp::Add => ("+", 5),
                    ArithOp::Sub => ("-", 5),
                    ArithOp::Mul => ("*", 6),
                    ArithOp::Div => ("/", 6),
                    ArithOp::Rem => ("%", 6),
                };
                write!(f, "{} {o} {}", P(a, p), P(b, p + 1))
            }
            Expr::Neg(x) => write!(f, "-{}", P(x, 7)),
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let items: Vec<String> = list.iter().map(|v| v.to_string()).collect();
                let not = if *negated { "not " } else { "" };
                write!(f, "{} {not}in ({})", P(expr, 5), items.join(", "))
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let not = if *negated { "not " } else { "" };
                write!(
                    f,
                    "{} {not}between {} and {}",
                    P(expr, 5),
                    P(low, 5),
                    P(high, 5)
                )
            }
            Expr::IsNull { expr, negated } => {
                let not = if *negated { " not" } else { "" };
                write!(f, "{} is{not} null", P(expr, 5))
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func_name(*func))?;
                join(f, args, ", ", 0)?;
                f.write_str(")")
            }
        }
    }
}

/// A duration in the largest unit that divides it.
pub fn format_duration(ms: i64) -> String {
    for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::All => f.write_str("all time"),
            Window::Rolling { ms } => write!(f, "within {}", format_duration(*ms)),
            Window::Ago { from_ms, to_ms } => write!(
                f,
                "between {} and {} ago",
                format_duration(*from_ms),
                format_duration(*to_ms)
            ),
            Window::Calendar { days } => write!(f, "within {days} calendar days"),
        }
    }
}

/// The DSL-ish name of an aggregate function (`last_time` for `last(filter)`).
pub fn agg_name(f: AggFunc) -> &'static str {
    match f {
        AggFunc::Count => "count",
        AggFunc::Sum => "sum",
        AggFunc::Avg => "avg",
        AggFunc::Min => "min",
        AggFunc::Max => "max",
        AggFunc::CountDistinct => "count_distinct",
        AggFunc::First => "first",
        AggFunc::Last => "last",
        AggFunc::MostFrequent => "most_frequent",
        AggFunc::FirstTime => "first_time",
        AggFunc::LastTime => "last_time",
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(a) = &self.arg {
            parts.push(a.to_string());
        }
        if let Some(x) = &self.filter {
            parts.push(x.to_string());
        }
        if self.window != Window::All {
            parts.push(self.window.to_string());
        }
        write!(f, "{}({})", agg_name(self.func), parts.join(", "))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "time zone {}", self.time_zone.name())?;
        writeln!(f, "aggregates:")?;
        for (i, a) in self.aggregates.iter().enumerate() {
            writeln!(f, "  a{i} = {a}  :: {}", type_word(a.result_type()))?;
        }
        writeln!(f, "tags:")?;
        for (i, t) in self.tags.iter().enumerate() {
            let ty = type_word(t.value_type);
            match &t.body {
                TagBody::Rule(e) => writeln!(f, "  t{i} {} :: {ty} = rule {e}", t.name)?,
                TagBody::Metric(e) => writeln!(f, "  t{i} {} :: {ty} = metric {e}", t.name)?,
                TagBody::External => writeln!(f, "  t{i} {} :: {ty} = external", t.name)?,
                TagBody::Stage(cases) => {
                    writeln!(f, "  t{i} {} :: {ty} = stage", t.name)?;
                    for (label, e) in cases {
                        writeln!(f, "      {label}: {e}")?;
                    }
                }
                TagBody::Buckets {
                    of,
                    scheme,
                    reverse,
                } => {
                    let s = match scheme {
                        BucketScheme::Quantiles(n) => format!("quantiles {n}"),
                        BucketScheme::Thresholds(ts) => {
                            let v: Vec<String> = ts.iter().map(|x| format_number(*x)).collect();
                            format!("thresholds [{}]", v.join(", "))
                        }
                    };
                    let r = if *reverse { ", reverse" } else { "" };
                    writeln!(f, "  t{i} {} :: {ty} = buckets({s}{r}) of {of}", t.name)?;
                }
            }
            let r = &t.reads;
            let mut reads = Vec::new();
            let mut add = |what: &str, set: &std::collections::BTreeSet<String>| {
                if !set.is_empty() {
                    let v: Vec<String> = set.iter().map(|x| format!("{x:?}")).collect();
                    reads.push(format!("{what} {}", v.join(", ")));
                }
            };
            add("events", &r.events);
            add("sources", &r.sources);
            add("traits", &r.traits);
            add("properties", &r.properties);
            add("tags", &r.tags);
            if !reads.is_empty() {
                writeln!(f, "      reads {}", reads.join("; "))?;
            }
        }
        Ok(())
    }
}
