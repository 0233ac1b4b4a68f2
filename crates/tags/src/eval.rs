//! Evaluation: the scalar evaluator (event scope and profile scope), population evaluation over
//! aggregate columns, and the naive reference evaluator that other engines are tested against.
//!
//! The semantics are those of the crate documentation ("Semantics").

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::ir::{
    AggFunc, Aggregate, ArithOp, BucketScheme, CmpOp, EventField, Expr, Func, Plan, ProfileField,
    TagBody, Window,
};
use crate::value::{Type, Value};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// One event as seen by event-scope expressions (aggregate filters and arguments).
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'a> {
    /// The event name (`event` in the DSL): the track event, or the page/screen name.
    pub name: Option<&'a str>,
    /// The message kind (`type`): identify, track, page, screen, group, alias.
    pub kind: &'a str,
    /// The source name (`source`).
    pub source: &'a str,
    /// Event time in ms since the epoch (`timestamp`).
    pub timestamp_ms: i64,
    /// The event's log offset (orders events with equal timestamps).
    pub offset: u64,
    /// The event's properties.
    pub properties: &'a serde_json::Map<String, serde_json::Value>,
}

/// Profile-scope inputs of one profile, for [`eval_scalar`].
pub trait Row {
    /// The value of aggregate slot `i` ([`Plan::aggregates`]).
    fn agg(&self, i: usize) -> Value;
    /// The value of tag `i` ([`Plan::tags`]), computed earlier.
    fn tag(&self, i: usize) -> Value;
    /// The raw JSON trait at `path` (below `traits`), if present.
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value>;
    /// A profile field.
    fn profile(&self, f: ProfileField) -> Value;
}

/// Evaluates an event-scope expression (a filter or an aggregate argument) on one event.
/// Profile-scope leaves (aggregates, traits, tags, profile fields) are null here.
pub fn eval_event(expr: &Expr, row: &EventRow<'_>, as_of: i64, tz: Tz) -> Value {
    eval(expr, &EventScope(row), as_of, tz)
}

/// Evaluates a profile-scope expression (a tag body, an audience) for one profile.
/// Event-scope leaves (event fields, properties) are null here.
pub fn eval_scalar(expr: &Expr, row: &dyn Row, as_of: i64, tz: Tz) -> Value {
    eval(expr, &ProfileScope(row), as_of, tz)
}

/// Looks up `path` in a JSON object, descending into nested objects.
pub fn json_path<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = map.get(first)?;
    for key in rest {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

/// Converts dynamically typed JSON (a trait or an event property) to `ty` by the crate's
/// conversion rules; null when absent or not convertible.
pub fn convert_json(v: Option<&serde_json::Value>, ty: Type) -> Value {
    use serde_json::Value as J;
    let Some(v) = v else { return Value::Null };
    match ty {
        Type::Number => match v {
            J::Number(n) => n.as_f64().map_or(Value::Null, Value::Num),
            J::String(s) => parse_decimal(s).map_or(Value::Null, Value::Num),
            _ => Value::Null,
        },
        Type::Str => match v {
            J::String(s) => Value::Str(Arc::from(s.as_str())),
            J::Number(n) => Value::Str(Arc::from(n.to_string().as_str())),
            J::Bool(b) => Value::Str(Arc::from(if *b { "true" } else { "false" })),
            _ => Value::Null,
        },
        Type::Bool => match v {
            J::Bool(b) => Value::Bool(*b),
            J::String(s) if s == "true" => Value::Bool(true),
            J::String(s) if s == "false" => Value::Bool(false),
            _ => Value::Null,
        },
        Type::Time => match v {
            J::String(s) => parse_time(s).map_or(Value::Null, Value::Time),
            J::Number(n) => match n.as_i64() {
                Some(ms) => Value::Time(ms),
                None => match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Value::Time(f as i64)
                    }
                    _ => Value::Null,
                },
            },
            _ => Value::Null,
        },
        Type::Null => Value::from_json(v),
    }
}

/// Parses a decimal number written as text (`"12"`, `"-3.5"`, `"1e3"`); no NaN or infinities.
pub fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim();
    let ok = !t.is_empty()
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if !ok {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses an RFC 3339 instant to ms since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.timestamp_millis())
}

/// The local calendar date of an instant in `tz`.
pub fn local_date(ms: i64, tz: Tz) -> Option<NaiveDate> {
    tz.timestamp_millis_opt(ms).single().map(|d| d.date_naive())
}

/// True when an event at `ts` lies in `window` for `as_of` (every window requires `ts ≤ as_of`).
pub fn in_window(window: &Window, ts: i64, as_of: i64, tz: Tz) -> bool {
    if ts > as_of {
        return false;
    }
    match *window {
        Window::All => true,
        Window::Rolling { ms } => ts > as_of.saturating_sub(ms),
        Window::Ago { from_ms, to_ms } => {
            ts > as_of.saturating_sub(from_ms) && ts <= as_of.saturating_sub(to_ms)
        }
        Window::Calendar { days } => match (local_date(ts, tz), local_date(as_of, tz)) {
            (Some(d), Some(today)) => {
                let diff = (today - d).num_days();
                diff >= 0 && diff < i64::from(days)
            }
            _ => false,
        },
    }
}

/// What leaves of an expression resolve to in a given scope.
trait Scope {
    fn agg(&self, i: usize) -> Value;
    fn tag(&self, i: usize) -> Value;
    fn trait_value(&self, path: &[String], ty: Type) -> Value;
    fn profile(&self, f: ProfileField) -> Value;
    fn event(&self, f: EventField) -> Value;
    fn property(&self, path: &[String], ty: Type) -> Value;
}

struct EventScope<'r, 'a>(&'r EventRow<'a>);

impl Scope for EventScope<'_, '_> {
    fn agg(&self, _: usize) -> Value {
        Value::Null
    }
    fn tag(&self, _: usize) -> Value {
        Value::Null
    }
    fn trait_value(&self, _: &[String], _: Type) -> Value {
        Value::Null
    }
    fn profile(&self, _: ProfileField) -> Value {
        Value::Null
    }
    fn event(&self, f: EventField) -> Value {
        let r = self.0;
        match f {
            EventField::Name => r.name.map_or(Value::Null, |s| Value::Str(Arc::from(s))),
            EventField::Type => Value::Str(Arc::from(r.kind)),
            EventField::Source => Value::Str(Arc::from(r.source)),
            EventField::Timestamp => Value::Time(r.timestamp_ms),
        }
    }
    fn property(&self, path: &[String], ty: Type) -> Value {
        convert_json(json_path(self.0.properties, path), ty)
    }
}

struct ProfileScope<'r>(&'r dyn Row);

impl Scope for ProfileScope<'_> {
    fn agg(&self, i: usize) -> Value {
        self.0.agg(i)
    }
    fn tag(&self, i: usize) -> Value {
        self.0.tag(i)
    }
    fn trait_value(&self, path: &[String], ty: Type) -> Value {
        convert_json(self.0.trait_json(path), ty)
    }
    fn profile(&self, f: ProfileField) -> Value {
        self.0.profile(f)
    }
    fn event(&self, _: EventField) -> Value {
        Value::Null
    }
    fn property(&self, _: &[String], _: Type) -> Value {
        Value::Null
    }
}

/// Orders two non-null values of the same type (numbers, strings by code point, instants,
/// booleans); `None` for null or mixed types.
pub fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Value::Time(x), Value::Time(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn eval<S: Scope>(e: &Expr, s: &S, as_of: i64, tz: Tz) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::AsOf => Value::Time(as_of),
        Expr::Agg(i) => s.agg(*i),
        Expr::Tag(i) => s.tag(*i),
        Expr::Trait { path, ty } => s.trait_value(path, *ty),
        Expr::Profile(f) => s.profile(*f),
        Expr::Event(f) => s.event(*f),
        Expr::Property { path, ty } => s.property(path, *ty),
        Expr::Not(x) => Value::Bool(!eval(x, s, as_of, tz).truthy()),
        Expr::And(xs) => Value::Bool(xs.iter().all(|x| eval(x, s, as_of, tz).truthy())),
        Expr::Or(xs) => Value::Bool(xs.iter().any(|x| eval(x, s, as_of, tz).truthy())),
        Expr::Cmp(op, a, b) => {
            let a = eval(a, s, as_of, tz);
            let b = eval(b, s, as_of, tz);
            Value::Bool(compare_values(&a, &b).is_some_and(|o| cmp_holds(*op, o)))
        }
        Expr::Arith(op, a, b) => {
            match (
                eval(a, s, as_of, tz).as_num(),
                eval(b, s, as_of, tz).as_num(),
            ) {
                (Some(x), Some(y)) => arith(*op, x, y),
                _ => Value::Null,
            }
        }
        Expr::Neg(x) => eval(x, s, as_of, tz)
            .as_num()
            .map_or(Value::Null, |n| Value::Num(-n)),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, s, as_of, tz);
            if v.is_null() {
                return Value::Bool(false);
            }
            let found = list
                .iter()
                .any(|m| compare_values(&v, m) == Some(Ordering::Equal));
            Value::Bool(found != *negated)
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = eval(expr, s, as_of, tz);
            let lo = eval(low, s, as_of, tz);
            let hi = eval(high, s, as_of, tz);
            match (compare_values(&v, &lo), compare_values(&v, &hi)) {
                (Some(a), Some(b)) => {
                    let inside = a != Ordering::Less && b != Ordering::Greater;
                    Value::Bool(inside != *negated)
                }
                _ => Value::Bool(false),
            }
        }
        Expr::IsNull { expr, negated } => {
            Value::Bool(eval(expr, s, as_of, tz).is_null() != *negated)
        }
        Expr::Call(f, args) => call(*f, args, s, as_of, tz),
    }
}

fn cmp_holds(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

fn arith(op: ArithOp, x: f64, y: f64) -> Value {
    let r = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => {
            if y == 0.0 {
                return Value::Null;
            }
            x / y
        }
        ArithOp::Rem => {
            if y == 0.0 {
                return Value::Null;
            }
            x % y
        }
    };
    if r.is_finite() {
        Value::Num(r)
    } else {
        Value::Null
    }
}

fn time_arg<S: Scope>(args: &[Expr], s: &S, as_of: i64, tz: Tz) -> Option<i64> {
    match args.first().map(|a| eval(a, s, as_of, tz)) {
        Some(Value::Time(t)) => Some(t),
        _ => None,
    }
}

fn str_arg<S: Scope>(args: &[Expr], i: usize, s: &S, as_of: i64, tz: Tz) -> Option<Arc<str>> {
    match args.get(i).map(|a| eval(a, s, as_of, tz)) {
        Some(Value::Str(t)) => Some(t),
        _ => None,
    }
}

fn num_arg<S: Scope>(args: &[Expr], i: usize, s: &S, as_of: i64, tz: Tz) -> Option<f64> {
    args.get(i).and_then(|a| eval(a, s, as_of, tz).as_num())
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        Value::Num(x)
    } else {
        Value::Null
    }
}

fn call<S: Scope>(f: Func, args: &[Expr], s: &S, as_of: i64, tz: Tz) -> Value {
    match f {
        Func::DaysSince => time_arg(args, s, as_of, tz).map_or(Value::Null, |t| {
            Value::Num(as_of.saturating_sub(t).div_euclid(DAY_MS) as f64)
        }),
        Func::HoursSince => time_arg(args, s, as_of, tz).map_or(Value::Null, |t| {
            Value::Num(as_of.saturating_sub(t).div_euclid(HOUR_MS) as f64)
        }),
        Func::CalendarDaysSince => {
            match time_arg(args, s, as_of, tz)
                .and_then(|t| Some((local_date(t, tz)?, local_date(as_of, tz)?)))
            {
                Some((d, today)) => Value::Num((today - d).num_days() as f64),
                None => Value::Null,
            }
        }
        Func::Coalesce => args
            .iter()
            .map(|a| eval(a, s, as_of, tz))
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        Func::Lower => str_arg(args, 0, s, as_of, tz).map_or(Value::Null, |x| {
            Value::Str(Arc::from(x.to_lowercase().as_str()))
        }),
        Func::Upper => str_arg(args, 0, s, as_of, tz).map_or(Value::Null, |x| {
            Value::Str(Arc::from(x.to_uppercase().as_str()))
        }),
        Func::Length => str_arg(args, 0, s, as_of, tz)
            .map_or(Value::Null, |x| Value::Num(x.chars().count() as f64)),
        Func::Contains | Func::StartsWith | Func::EndsWith => {
            match (
                str_arg(args, 0, s, as_of, tz),
                str_arg(args, 1, s, as_of, tz),
            ) {
                (Some(a), Some(b)) => Value::Bool(match f {
                    Func::Contains => a.contains(b.as_ref()),
                    Func::StartsWith => a.starts_with(b.as_ref()),
                    _ => a.ends_with(b.as_ref()),
                }),
                _ => Value::Bool(false),
            }
        }
        Func::Concat => {
            let mut out = String::new();
            for a in args {
                match eval(a, s, as_of, tz) {
                    Value::Null => {}
                    Value::Str(x) => out.push_str(&x),
                    other => out.push_str(&plain_text(&other)),
                }
            }
            Value::Str(Arc::from(out.as_str()))
        }
        Func::Abs => num_arg(args, 0, s, as_of, tz).map_or(Value::Null, |x| num(x.abs())),
        Func::Round => match num_arg(args, 0, s, as_of, tz) {
            None => Value::Null,
            Some(x) => {
                if args.len() < 2 {
                    return num(x.round());
                }
                match num_arg(args, 1, s, as_of, tz) {
                    Some(d) => {
                        let p = 10f64.powi(d.trunc().clamp(-15.0, 15.0) as i32);
                        num((x * p).round() / p)
                    }
                    None => Value::Null,
                }
            }
        },
        Func::Floor => num_arg(args, 0, s, as_of, tz).map_or(Value::Null, |x| num(x.floor())),
        Func::Ceil => num_arg(args, 0, s, as_of, tz).map_or(Value::Null, |x| num(x.ceil())),
        Func::Least | Func::Greatest => {
            let mut best: Option<Value> = None;
            for a in args {
                let v = eval(a, s, as_of, tz);
                if v.is_null() {
                    continue;
                }
                best = match best {
                    None => Some(v),
                    Some(b) => {
                        let o = compare_values(&v, &b);
                        let take = match f {
                            Func::Least => o == Some(Ordering::Less),
                            _ => o == Some(Ordering::Greater),
                        };
                        Some(if take { v } else { b })
                    }
                };
            }
            best.unwrap_or(Value::Null)
        }
    }
}

/// A value as plain text (no quotes): numbers without a trailing `.0` when integral, instants
/// in RFC 3339 UTC.
pub fn plain_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregation (shared by the reference evaluator; other engines have their own kernels).

/// Folds matching events into one aggregate's value. Feed events in any order with
/// [`AggState::push`], then read [`AggState::finish`].
#[derive(Debug, Clone)]
pub struct AggState {
    func: AggFunc,
    count: u64,
    sum: f64,
    best: Option<(Value, i64, u64)>,
    distinct: Vec<Value>,
    freq: Vec<(Value, u64)>,
}

impl AggState {
    /// An empty state for `func`.
    pub fn new(func: AggFunc) -> Self {
        AggState {
            func,
            count: 0,
            sum: 0.0,
            best: None,
            distinct: Vec::new(),
            freq: Vec::new(),
        }
    }

    /// Adds one matching event whose argument evaluated to `arg` (ignored by `Count`,
    /// `FirstTime`, `LastTime`).
    pub fn push(&mut self, arg: Value, ts: i64, offset: u64) {
        match self.func {
            AggFunc::Count => self.count += 1,
            AggFunc::FirstTime | AggFunc::LastTime => {
                self.take_if_better(Value::Time(ts), ts, offset);
            }
            _ if arg.is_null() => {}
            AggFunc::Sum | AggFunc::Avg => {
                if let Some(x) = arg.as_num() {
                    self.sum += x;
                    self.count += 1;
                }
            }
            AggFunc::Min | AggFunc::Max => {
                let replace = match &self.best {
                    None => true,
                    Some((b, _, _)) => {
                        let o = compare_values(&arg, b);
                        if self.func == AggFunc::Min {
                            o == Some(Ordering::Less)
                        } else {
                            o == Some(Ordering::Greater)
                        }
                    }
                };
                if replace {
                    self.best = Some((arg, ts, offset));
                }
            }
            AggFunc::First | AggFunc::Last => self.take_if_better(arg, ts, offset),
            AggFunc::CountDistinct => {
                if !self.distinct.iter().any(|d| same_value(d, &arg)) {
                    self.distinct.push(arg);
                }
            }
            AggFunc::MostFrequent => {
                match self.freq.iter_mut().find(|(v, _)| same_value(v, &arg)) {
                    Some((_, n)) => *n += 1,
                    None => self.freq.push((arg, 1)),
                }
            }
        }
    }

    fn take_if_better(&mut self, v: Value, ts: i64, offset: u64) {
        let earliest = matches!(self.func, AggFunc::First | AggFunc::FirstTime);
        let better = match &self.best {
            None => true,
            Some((_, bts, boff)) => {
                let o = (ts, offset).cmp(&(*bts, *boff));
                if earliest {
                    o == Ordering::Less
                } else {
                    o == Ordering::Greater
                }
            }
        };
        if better {
            self.best = Some((v, ts, offset));
        }
    }

    /// The aggregate's value.
    pub fn finish(self) -> Value {
        match self.func {
            AggFunc::Count => Value::Num(self.count as f64),
            AggFunc::Sum => Value::Num(self.sum),
            AggFunc::Avg => {
                if self.count == 0 {
                    Value::Null
                } else {
                    Value::Num(self.sum / self.count as f64)
                }
            }
            AggFunc::CountDistinct => Value::Num(self.distinct.len() as f64),
            AggFunc::MostFrequent => {
                let mut best: Option<(Value, u64)> = None;
                for (v, n) in self.freq {
                    best = match best {
                        None => Some((v, n)),
                        Some((bv, bn)) => {
                            let less = compare_values(&v, &bv) == Some(Ordering::Less);
                            if n > bn || (n == bn && less) {
                                Some((v, n))
                            } else {
                                Some((bv, bn))
                            }
                        }
                    };
                }
                best.map_or(Value::Null, |(v, _)| v)
            }
            _ => self.best.map_or(Value::Null, |(v, _, _)| v),
        }
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    compare_values(a, b) == Some(Ordering::Equal)
}

/// Computes one aggregate over a profile's events the obvious way: every event with
/// `ts ≤ as_of` in the window whose filter is true.
pub fn aggregate_events<'a>(
    agg: &Aggregate,
    events: impl IntoIterator<Item = EventRow<'a>>,
    as_of: i64,
    tz: Tz,
) -> Value {
    let mut st = AggState::new(agg.func);
    for ev in events {
        if !in_window(&agg.window, ev.timestamp_ms, as_of, tz) {
            continue;
        }
        if let Some(f) = &agg.filter {
            if !eval_event(f, &ev, as_of, tz).truthy() {
                continue;
            }
        }
        let arg = agg
            .arg
            .as_ref()
            .map_or(Value::Null, |a| eval_event(a, &ev, as_of, tz));
        st.push(arg, ev.timestamp_ms, ev.offset);
    }
    st.finish()
}

// ---------------------------------------------------------------------------------------------
// Tags over a population.

/// Bucket numbers (1..=n, reversed when asked) for every value of a buckets tag's `of`, over
/// the whole population (quantile cut points depend on everybody). Null stays null.
pub fn bucket_values(of: &[Value], scheme: &BucketScheme, reverse: bool) -> Vec<Value> {
    let (cuts, n): (Vec<f64>, u32) = match scheme {
        BucketScheme::Thresholds(t) => (t.clone(), t.len() as u32 + 1),
        BucketScheme::Quantiles(n) => {
            let mut vals: Vec<f64> = of
                .iter()
                .filter_map(Value::as_num)
                .filter(|x| !x.is_nan())
                .collect();
            vals.sort_by(|a, b| a.total_cmp(b));
            let len = vals.len();
            let n = (*n).max(1);
            let cuts = if len == 0 {
                Vec::new()
            } else {
                (1..n as usize)
                    .filter_map(|k| vals.get(k * len / n as usize).copied())
                    .collect()
            };
            (cuts, n)
        }
    };
    of.iter()
        .map(|v| match v.as_num() {
            Some(x) if !x.is_nan() => {
                let b = 1 + cuts.iter().filter(|c| x >= **c).count() as u32;
                Value::Num(f64::from(if reverse { n + 1 - b } else { b }))
            }
            _ => Value::Null,
        })
        .collect()
}

/// The computed values of one tag for a population.
#[derive(Debug, Clone, PartialEq)]
pub struct TagColumn {
    /// The tag's name.
    pub name: String,
    /// One value per profile, in the order of the ids given to [`evaluate_population`].
    pub values: Vec<Value>,
}

/// Populations at least this large are evaluated on two threads.
const PARALLEL_ROWS: usize = 65_536;

/// Everything [`evaluate_population`] reads.
pub struct Population<'a> {
    /// Dense profile ids to compute, in output order.
    pub ids: &'a [u32],
    /// One column per [`Plan::aggregates`] slot, indexed by dense id.
    pub aggs: &'a [crate::ir::Column],
    /// A profile's traits.
    pub traits: &'a (dyn Fn(u32) -> Option<&'a serde_json::Map<String, serde_json::Value>> + Sync),
    /// A profile's `first_seen` / `last_seen`.
    pub profile: &'a (dyn Fn(u32, ProfileField) -> Value + Sync),
    /// The stored value of external tag `tag` (an index into [`Plan::tags`]) for a profile.
    pub externals: &'a (dyn Fn(usize, u32) -> Value + Sync),
    /// The computation's instant (ms).
    pub as_of: i64,
}

struct PopRow<'p, 'a> {
    pop: &'p Population<'a>,
    id: u32,
    pos: usize,
    done: &'p [TagColumn],
}

impl Row for PopRow<'_, '_> {
    fn agg(&self, i: usize) -> Value {
        self.pop
            .aggs
            .get(i)
            .map_or(Value::Null, |c| c.get(self.id as usize))
    }
    fn tag(&self, i: usize) -> Value {
        self.done
            .get(i)
            .and_then(|c| c.values.get(self.pos))
            .cloned()
            .unwrap_or(Value::Null)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        (self.pop.traits)(self.id).and_then(|m| json_path(m, path))
    }
    fn profile(&self, f: ProfileField) -> Value {
        (self.pop.profile)(self.id, f)
    }
}

/// Computes every tag of `plan` for every profile of `pop`, in plan order (a tag sees the
/// values of the tags before it). Buckets take two passes: `of` for everybody, then the cuts.
pub fn evaluate_population(plan: &Plan, pop: &Population<'_>) -> Vec<TagColumn> {
    let mut done: Vec<TagColumn> = Vec::with_capacity(plan.tags.len());
    for (ti, tag) in plan.tags.iter().enumerate() {
        let tz = plan.time_zone;
        // Rows are independent within a tag (a tag sees only earlier tags' finished columns):
        // large populations are evaluated on two threads, each a contiguous half, in order.
        let per_row = |f: &(dyn Fn(&PopRow<'_, '_>) -> Value + Sync)| -> Vec<Value> {
            let run = |range: std::ops::Range<usize>| -> Vec<Value> {
                pop.ids[range.clone()]
                    .iter()
                    .zip(range)
                    .map(|(&id, pos)| {
                        f(&PopRow {
                            pop,
                            id,
                            pos,
                            done: &done,
                        })
                    })
                    .collect()
            };
            let n = pop.ids.len();
            if n < PARALLEL_ROWS {
                return run(0..n);
            }
            let mid = n / 2;
            std::thread::scope(|s| {
                let second = s.spawn(|| run(mid..n));
                let mut first = run(0..mid);
                // A panic in the worker is a bug in the evaluator; re-raise it here.
                match second.join() {
                    Ok(rest) => first.extend(rest),
                    Err(e) => std::panic::resume_unwind(e),
                }
                first
            })
        };
        let values = match &tag.body {
            TagBody::External => pop.ids.iter().map(|&id| (pop.externals)(ti, id)).collect(),
            TagBody::Buckets {
                of,
                scheme,
                reverse,
            } => {
                let ofs = per_row(&|r| eval_scalar(of, r, pop.as_of, tz));
                bucket_values(&ofs, scheme, *reverse)
            }
            body => per_row(&|r| tag_value(body, r, pop.as_of, tz)),
        };
        done.push(TagColumn {
            name: tag.name.clone(),
            values,
        });
    }
    done
}

/// The value of a rule, stage or metric body for one profile (null for buckets and externals,
/// which need the population or outside data).
pub fn tag_value(body: &TagBody, row: &dyn Row, as_of: i64, tz: Tz) -> Value {
    match body {
        TagBody::Rule(e) => Value::Bool(eval_scalar(e, row, as_of, tz).truthy()),
        TagBody::Stage(cases) => cases
            .iter()
            .find(|(_, e)| eval_scalar(e, row, as_of, tz).truthy())
            .map_or(Value::Null, |(label, _)| {
                Value::Str(Arc::from(label.as_str()))
            }),
        TagBody::Metric(e) => eval_scalar(e, row, as_of, tz),
        TagBody::Buckets { .. } | TagBody::External => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// The reference evaluator.

/// One event of a [`RefProfile`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefEvent {
    /// Log offset (orders events with equal timestamps).
    pub offset: u64,
    /// Event name, if any.
    pub name: Option<String>,
    /// Message kind (track, page, identify …).
    pub kind: String,
    /// Source name.
    pub source: String,
    /// Event time, ms.
    pub timestamp_ms: i64,
    /// Properties.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl RefEvent {
    /// The event as an [`EventRow`].
    pub fn row(&self) -> EventRow<'_> {
        EventRow {
            name: self.name.as_deref(),
            kind: &self.kind,
            source: &self.source,
            timestamp_ms: self.timestamp_ms,
            offset: self.offset,
            properties: &self.properties,
        }
    }
}

/// One profile for the reference evaluator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefProfile {
    /// The profile id.
    pub id: u32,
    /// Traits.
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// Events, in any order.
    pub events: Vec<RefEvent>,
    /// Values of external tags, by tag name (absent = null).
    pub externals: BTreeMap<String, Value>,
}

struct RefRow<'a> {
    p: &'a RefProfile,
    aggs: &'a [Value],
    tags: &'a [Value],
    first_seen: Value,
    last_seen: Value,
}

impl Row for RefRow<'_> {
    fn agg(&self, i: usize) -> Value {
        self.aggs.get(i).cloned().unwrap_or(Value::Null)
    }
    fn tag(&self, i: usize) -> Value {
        self.tags.get(i).cloned().unwrap_or(Value::Null)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        json_path(&self.p.traits, path)
    }
    fn profile(&self, f: ProfileField) -> Value {
        match f {
            ProfileField::FirstSeen => self.first_seen.clone(),
            ProfileField::LastSeen => self.last_seen.clone(),
        }
    }
}

/// The obviously correct evaluator: every aggregate of every profile by a naive scan of its
/// events (no sharing), then the tags in plan order. `result[p][t]` is tag `t` of
/// `profiles[p]`.
pub fn reference(plan: &Plan, profiles: &[RefProfile], as_of: i64) -> Vec<Vec<Value>> {
    let tz = plan.time_zone;
    let aggs: Vec<Vec<Value>> = profiles
        .iter()
        .map(|p| {
            plan.aggregates
                .iter()
                .map(|a| aggregate_events(a, p.events.iter().map(RefEvent::row), as_of, tz))
                .collect()
        })
        .collect();
    let seen: Vec<(Value, Value)> = profiles
        .iter()
        .map(|p| {
            let ts = p
                .events
                .iter()
                .map(|e| e.timestamp_ms)
                .filter(|t| *t <= as_of);
            let first = ts.clone().min().map_or(Value::Null, Value::Time);
            let last = ts.max().map_or(Value::Null, Value::Time);
            (first, last)
        })
        .collect();
    let mut out: Vec<Vec<Value>> = vec![Vec::with_capacity(plan.tags.len()); profiles.len()];
    for tag in &plan.tags {
        match &tag.body {
            TagBody::External => {
                for (p, row) in profiles.iter().zip(out.iter_mut()) {
                    row.push(p.externals.get(&tag.name).cloned().unwrap_or(Value::Null));
                }
            }
            TagBody::Buckets {
                of,
                scheme,
                reverse,
            } => {
                let ofs: Vec<Value> = (0..profiles.len())
                    .map(|i| {
                        let r = RefRow {
                            p: &profiles[i],
                            aggs: &aggs[i],
                            tags: &out[i],
                            first_seen: seen[i].0.clone(),
                            last_seen: seen[i].1.clone(),
                        };
                        eval_scalar(of, &r, as_of, tz)
                    })
                    .collect();
                for (row, v) in out.iter_mut().zip(bucket_values(&ofs, scheme, *reverse)) {
                    row.push(v);
                }
            }
            body => {
                for i in 0..profiles.len() {
                    let v = {
                        let r = RefRow {
                            p: &profiles[i],
                            aggs: &aggs[i],
                            tags: &out[i],
                            first_seen: seen[i].0.clone(),
                            last_seen: seen[i].1.clone(),
                        };
                        tag_value(body, &r, as_of, tz)
                    };
                    out[i].push(v);
                }
            }
        }
    }
    out
}
