//! The typed plan (IR): what every back end (reference evaluator, batch kernel, DataFusion SQL,
//! later the real-time engine and Spark SQL) executes.
//!
//! A [`Plan`] is compiled from a set of tag definitions. Its two halves:
//! - [`Plan::aggregates`]: every event aggregate any tag reads, **deduplicated** across tags (two
//!   tags reading `count(event = "Order Completed", within 30d)` share one slot). A batch back end
//!   computes all of them in one fused scan of the events.
//! - [`Plan::tags`]: the tags in **topological order** (a tag comes after every tag it reads), each
//!   a profile-scope expression over aggregate slots, traits, profile fields and earlier tags.
//!
//! Expressions are typed: the checker has resolved every name, inserted the conversion of
//! dynamically typed JSON (traits, event properties) to the type the context wants, and refused
//! what does not type.

use std::collections::BTreeSet;

use crate::value::{Type, Value};

/// A compiled, type-checked set of tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Event aggregates, deduplicated. [`Expr::Agg`] indexes this.
    pub aggregates: Vec<Aggregate>,
    /// Tags in topological order. [`Expr::Tag`] indexes this and only points backwards.
    pub tags: Vec<TagPlan>,
    /// The workspace time zone (calendar windows, calendar day functions).
    pub time_zone: chrono_tz::Tz,
}

/// One compiled tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagPlan {
    /// The tag's name (`high_intent`), unique in the plan.
    pub name: String,
    /// What the tag computes.
    pub body: TagBody,
    /// The type of the tag's value: Bool for rules, Str for stages, Number for metrics and
    /// buckets, the declared type for externals.
    pub value_type: Type,
    /// What the tag reads, directly (lineage).
    pub reads: Reads,
}

/// What a tag computes.
#[derive(Debug, Clone, PartialEq)]
pub enum TagBody {
    /// A boolean expression.
    Rule(Expr),
    /// Cases tried in order; the label of the first true one is the value; null when none is.
    Stage(Vec<(String, Expr)>),
    /// A number (or, rarely, a string or an instant) per profile.
    Metric(Expr),
    /// A number 1..=n: the bucket of `of` (a Number expression); null when `of` is null.
    Buckets {
        /// The bucketed value.
        of: Expr,
        /// How the bucket bounds are found.
        scheme: BucketScheme,
        /// When true the bucket is `n + 1 − b` (e.g. RFM recency: fewer days is better).
        reverse: bool,
    },
    /// Values loaded from a file or a vendor; nothing to compute.
    External,
}

/// Bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketScheme {
    /// `n` buckets of equal population. Over the non-null values sorted ascending (`v[0..N]`),
    /// the cut points are `c_k = v[floor(k·N/n)]` for `k = 1..n−1`; the bucket of `x` is
    /// `1 + |{k : x ≥ c_k}|`. Equal values always share a bucket.
    Quantiles(u32),
    /// Ascending thresholds `t_1 < … < t_{n−1}`: the bucket of `x` is `1 + |{k : x ≥ t_k}|`.
    Thresholds(Vec<f64>),
}

/// What a tag reads directly (derived from its definition; the catalog's lineage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Event names a filter compares `event` with.
    pub events: BTreeSet<String>,
    /// Source names a filter compares `source` with.
    pub sources: BTreeSet<String>,
    /// Trait paths (`skin_type`, `address.city`).
    pub traits: BTreeSet<String>,
    /// Event property paths (`revenue`).
    pub properties: BTreeSet<String>,
    /// Other tags, by name.
    pub tags: BTreeSet<String>,
}

/// An event aggregate: `func(arg) over events matching filter within window`, per profile.
///
/// Every window also excludes events after `as_of`. `arg` and `filter` are event-scope
/// expressions ([`Expr::Event`], [`Expr::Property`], literals, scalar functions).
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The aggregate function.
    pub func: AggFunc,
    /// The aggregated value; `None` for `Count`, `FirstTime`, `LastTime`.
    pub arg: Option<Expr>,
    /// Which events count (a Bool expression); `None` = all events.
    pub filter: Option<Expr>,
    /// The time window.
    pub window: Window,
}

/// Aggregate functions. Except `Count`, `FirstTime` and `LastTime`, they skip events whose
/// `arg` is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Matching events; 0 when none. Number.
    Count,
    /// Sum of a Number arg; 0 when none.
    Sum,
    /// Mean of a Number arg; null when none.
    Avg,
    /// Least arg (Number, Str or Time); null when none.
    Min,
    /// Greatest arg; null when none.
    Max,
    /// Distinct non-null args; 0 when none. Number.
    CountDistinct,
    /// Arg of the earliest matching event (by timestamp, then log offset); null when none.
    First,
    /// Arg of the latest matching event; null when none.
    Last,
    /// Most frequent arg; ties go to the least value; null when none.
    MostFrequent,
    /// Time of the earliest matching event (`first(filter)` in the DSL); null when none.
    FirstTime,
    /// Time of the latest matching event (`last(filter)` in the DSL); null when none.
    LastTime,
}

/// An aggregate's time window. Every window also requires `ts ≤ as_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// All events up to `as_of`.
    All,
    /// `within 7d`: `as_of − ms < ts ≤ as_of`.
    Rolling {
        /// Window length in milliseconds.
        ms: i64,
    },
    /// `between 60d and 30d ago`: `as_of − from_ms < ts ≤ as_of − to_ms` (`from_ms > to_ms`).
    Ago {
        /// The far end, in milliseconds before `as_of`.
        from_ms: i64,
        /// The near end, in milliseconds before `as_of`.
        to_ms: i64,
    },
    /// `within 7 calendar days`: the event's local date (workspace time zone) is one of the
    /// `days` dates ending with `as_of`'s local date, and `ts ≤ as_of`.
    Calendar {
        /// Number of calendar days, ≥ 1.
        days: u32,
    },
}

/// Event fields an aggregate's filter or arg can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventField {
    /// `event`: the track event name (or page/screen name). Str.
    Name,
    /// `type`: identify, track, page, screen, group, alias. Str.
    Type,
    /// `source`: the source name. Str.
    Source,
    /// `timestamp`: the event time. Time.
    Timestamp,
}

/// Profile fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileField {
    /// Time of the profile's earliest event (≤ as_of). Time.
    FirstSeen,
    /// Time of the profile's latest event (≤ as_of). Time.
    LastSeen,
}

/// A typed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// The computation's `as_of` instant (`now()` in the DSL). Time.
    AsOf,
    /// An aggregate slot (profile scope).
    Agg(usize),
    /// An earlier tag's value (profile scope).
    Tag(usize),
    /// A trait converted to `ty` (profile scope); null when absent or not convertible.
    Trait {
        /// Path below `traits`.
        path: Vec<String>,
        /// The type the context wants.
        ty: Type,
    },
    /// A profile field (profile scope).
    Profile(ProfileField),
    /// An event field (event scope).
    Event(EventField),
    /// An event property converted to `ty` (event scope).
    Property {
        /// Path below `properties`.
        path: Vec<String>,
        /// The type the context wants.
        ty: Type,
    },
    /// Two-valued `not` (null operand counts as false, so `not` gives true).
    Not(Box<Expr>),
    /// Two-valued conjunction.
    And(Vec<Expr>),
    /// Two-valued disjunction.
    Or(Vec<Expr>),
    /// A comparison; false when either side is null.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// Arithmetic on numbers; null in, null out; division by zero is null.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `x in ("a", "b")`; false when `x` is null (also for `not in`).
    In {
        /// The tested value.
        expr: Box<Expr>,
        /// Literal members.
        list: Vec<Value>,
        /// `not in`.
        negated: bool,
    },
    /// `x between a and b` (inclusive); false when any is null (also for `not between`).
    Between {
        /// The tested value.
        expr: Box<Expr>,
        /// Lower bound.
        low: Box<Expr>,
        /// Upper bound.
        high: Box<Expr>,
        /// `not between`.
        negated: bool,
    },
    /// `x is null` / `x is not null`.
    IsNull {
        /// The tested value.
        expr: Box<Expr>,
        /// `is not null`.
        negated: bool,
    },
    /// A scalar function call.
    Call(Func, Vec<Expr>),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as written in the DSL (`>=`).
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// Scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// `days_since(t)`: `floor((as_of − t) / 24h)`. Number.
    DaysSince,
    /// `hours_since(t)`: `floor((as_of − t) / 1h)`. Number.
    HoursSince,
    /// `calendar_days_since(t)`: local date of `as_of` minus local date of `t`. Number.
    CalendarDaysSince,
    /// `coalesce(a, b, …)`: the first non-null argument.
    Coalesce,
    /// `lower(s)`.
    Lower,
    /// `upper(s)`.
    Upper,
    /// `length(s)` in characters. Number.
    Length,
    /// `contains(s, part)`. Bool.
    Contains,
    /// `starts_with(s, prefix)`. Bool.
    StartsWith,
    /// `ends_with(s, suffix)`. Bool.
    EndsWith,
    /// `concat(a, b, …)`: null arguments are skipped. Str.
    Concat,
    /// `abs(x)`.
    Abs,
    /// `round(x)` half away from zero, or `round(x, digits)`.
    Round,
    /// `floor(x)`.
    Floor,
    /// `ceil(x)`.
    Ceil,
    /// `least(a, b, …)` ignoring nulls.
    Least,
    /// `greatest(a, b, …)` ignoring nulls.
    Greatest,
}

/// Per-profile aggregate results of a batch back end: one column per [`Plan::aggregates`] slot,
/// each indexed by dense profile id (`len` = the id space).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers; NaN is null.
    Num(Vec<f64>),
    /// Instants in ms; `i64::MIN` is null.
    Time(Vec<i64>),
    /// Strings.
    Str(Vec<Option<std::sync::Arc<str>>>),
    /// Booleans (e.g. `max` of a Bool property); None is null.
    Bool(Vec<Option<bool>>),
}

impl Column {
    /// The value at `id` (null past the end).
    pub fn get(&self, id: usize) -> Value {
        match self {
            Column::Num(v) => match v.get(id) {
                Some(x) if !x.is_nan() => Value::Num(*x),
                _ => Value::Null,
            },
            Column::Time(v) => match v.get(id) {
                Some(t) if *t != i64::MIN => Value::Time(*t),
                _ => Value::Null,
            },
            Column::Str(v) => match v.get(id) {
                Some(Some(s)) => Value::Str(s.clone()),
                _ => Value::Null,
            },
            Column::Bool(v) => match v.get(id) {
                Some(Some(b)) => Value::Bool(*b),
                _ => Value::Null,
            },
        }
    }

    /// Number of ids the column covers.
    pub fn len(&self) -> usize {
        match self {
            Column::Num(v) => v.len(),
            Column::Time(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// True when the column covers no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Aggregate {
    /// The type of the aggregate's result given its argument's type.
    pub fn result_type(&self) -> Type {
        match self.func {
            AggFunc::Count | AggFunc::CountDistinct | AggFunc::Sum | AggFunc::Avg => Type::Number,
            AggFunc::FirstTime | AggFunc::LastTime => Type::Time,
            AggFunc::Min
            | AggFunc::Max
            | AggFunc::First
            | AggFunc::Last
            | AggFunc::MostFrequent => self.arg.as_ref().map_or(Type::Null, Expr::ty),
        }
    }
}

impl Expr {
    /// Calls `f` on this node and every node below it, parents first.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Not(a) | Expr::Neg(a) => a.walk(f),
            Expr::And(v) | Expr::Or(v) | Expr::Call(_, v) => v.iter().for_each(|x| x.walk(f)),
            Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::In { expr, .. } | Expr::IsNull { expr, .. } => expr.walk(f),
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.walk(f);
                low.walk(f);
                high.walk(f);
            }
            Expr::Lit(_)
            | Expr::AsOf
            | Expr::Agg(_)
            | Expr::Tag(_)
            | Expr::Trait { .. }
            | Expr::Profile(_)
            | Expr::Event(_)
            | Expr::Property { .. } => {}
        }
    }

    /// The static type of an expression whose aggregate and tag slots need no lookup; for
    /// [`Expr::Agg`] and [`Expr::Tag`] use [`Plan::type_of`].
    pub fn ty(&self) -> Type {
        match self {
            Expr::Lit(v) => match v {
                Value::Null => Type::Null,
                Value::Bool(_) => Type::Bool,
                Value::Num(_) => Type::Number,
                Value::Str(_) => Type::Str,
                Value::Time(_) => Type::Time,
            },
            Expr::AsOf => Type::Time,
            Expr::Agg(_) | Expr::Tag(_) => Type::Null,
            Expr::Trait { ty, .. } | Expr::Property { ty, .. } => *ty,
            Expr::Profile(_) => Type::Time,
            Expr::Event(f) => match f {
                EventField::Timestamp => Type::Time,
                _ => Type::Str,
            },
            Expr::Not(_)
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Cmp(..)
            | Expr::In { .. }
            | Expr::Between { .. }
            | Expr::IsNull { .. } => Type::Bool,
            Expr::Arith(..) | Expr::Neg(_) => Type::Number,
            Expr::Call(f, args) => match f {
                Func::DaysSince
                | Func::HoursSince
                | Func::CalendarDaysSince
                | Func::Length
                | Func::Abs
                | Func::Round
                | Func::Floor
                | Func::Ceil => Type::Number,
                Func::Contains | Func::StartsWith | Func::EndsWith => Type::Bool,
                Func::Lower | Func::Upper | Func::Concat => Type::Str,
                Func::Coalesce | Func::Least | Func::Greatest => args
                    .iter()
                    .map(Expr::ty)
                    .find(|t| *t != Type::Null)
                    .unwrap_or(Type::Null),
            },
        }
    }
}

impl Plan {
    /// The static type of `e`, looking up aggregate and tag slots.
    pub fn type_of(&self, e: &Expr) -> Type {
        match e {
            Expr::Agg(i) => self
                .aggregates
                .get(*i)
                .map_or(Type::Null, Aggregate::result_type),
            Expr::Tag(i) => self.tags.get(*i).map_or(Type::Null, |t| t.value_type),
            Expr::Call(Func::Coalesce | Func::Least | Func::Greatest, args) => args
                .iter()
                .map(|a| self.type_of(a))
                .find(|t| *t != Type::Null)
                .unwrap_or(Type::Null),
            other => other.ty(),
        }
    }

    /// The index of the tag named `name`.
    pub fn tag_index(&self, name: &str) -> Option<usize> {
        self.tags.iter().position(|t| t.name == name)
    }
}
