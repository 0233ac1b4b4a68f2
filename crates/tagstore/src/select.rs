//! Audience selection: lowering a [`portrait_tags::ir::Expr`] to bitmap algebra.
//!
//! Supported forms (`T` is `Expr::Tag(i)`, `L` a literal, `-L` a negated number literal):
//!
//! | expression | bool tag | enum tag | numeric tag |
//! |---|---|---|---|
//! | `T` | its bitmap | — | — |
//! | `T op L`, `L op T` | `=`/`!=` with a bool | union of the values `v` with `v op L` | range query |
//! | `T [not] in (L, …)` | yes | yes | yes |
//! | `T [not] between L and L` | — | yes | range query |
//! | `T is [not] null` | never null | ids without / with a value | same |
//!
//! plus `and` (intersection, smallest operand first; `not` operands become differences),
//! `or` (union), `not x` (universe − x) and `true`/`false`/`null` literals. Everything else
//! (traits, aggregates, arithmetic, functions, tag-to-tag comparisons) is
//! [`SelectError::Unsupported`].
//!
//! Semantics follow the IR's two-valued logic: a comparison with a missing value is false, so
//! `not (spend >= 500)` holds for ids with no spend. An enum value compared with a number is
//! parsed as a number (values that do not parse never match); compared with a string it is
//! compared as text (byte order); a `Time` literal is compared with numeric tags as epoch
//! milliseconds. Null members of an `in` list are ignored; a null or NaN bound or operand makes
//! the comparison false, also under `not between` / `not in`-style negation.
//!
//! Results are always subsets of the universe (every tag is, by the store's invariant).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use portrait_tags::ir::{CmpOp, Expr};
use portrait_tags::value::Value;
use roaring::RoaringBitmap;

use crate::error::SelectError;
use crate::flat::{self, FlatBitmap};
use crate::numeric::{NumericColumn, RangeSet};
use crate::store::{EnumTag, Snapshot, TagData};

type Set<'a> = Cow<'a, RoaringBitmap>;

/// The ids of `snapshot`'s universe for which `expr` holds. `tags[i]` is the store name of
/// `Expr::Tag(i)`.
pub fn select(
    snapshot: &Snapshot,
    expr: &Expr,
    tags: &[String],
) -> Result<RoaringBitmap, SelectError> {
    Lowering {
        snap: snapshot,
        tags,
    }
    .lower(expr)
    .map(Cow::into_owned)
}

/// The number of ids [`select()`] would return, using cardinality-only operations where that
/// avoids materializing the result: `a and b`, `a and not b`, `a or b`, `not x`, a numeric
/// range (two binary searches).
pub fn count(snapshot: &Snapshot, expr: &Expr, tags: &[String]) -> Result<u64, SelectError> {
    Lowering {
        snap: snapshot,
        tags,
    }
    .count(expr)
}

/// The size of [`select()`]'s result and its first `n` ids, ascending. An `and` of stored
/// bitmaps (bool tags, enum values, their negations, at most one numeric range) is answered by
/// the flat kernels ([`crate::flat`]) without materialising the members.
pub fn preview(
    snapshot: &Snapshot,
    expr: &Expr,
    tags: &[String],
    n: usize,
) -> Result<(u64, Vec<u32>), SelectError> {
    let l = Lowering {
        snap: snapshot,
        tags,
    };
    let members = match expr {
        Expr::And(xs) => {
            let parts = l.lower_and(xs)?;
            if let Some(flats) = l.flat_operands(&parts) {
                return Ok((flats.count(), flats.sample(n)));
            }
            Cow::Owned(l.intersect(parts))
        }
        other => l.lower(other)?,
    };
    Ok((members.len(), sample(&members, n)))
}

/// The first `n` ids of `bitmap`, ascending.
pub fn sample(bitmap: &RoaringBitmap, n: usize) -> Vec<u32> {
    bitmap.iter().take(n).collect()
}

struct Lowering<'a> {
    snap: &'a Snapshot,
    tags: &'a [String],
}

/// A comparison reduced to `tag op literal`.
struct Atom<'a> {
    name: &'a str,
    tag: &'a TagData,
    op: CmpOp,
    lit: Value,
}

fn literal(e: &Expr) -> Option<Value> {
    match e {
        Expr::Lit(v) => Some(v.clone()),
        Expr::Neg(inner) => match &**inner {
            Expr::Lit(Value::Num(x)) => Some(Value::Num(-x)),
            _ => None,
        },
        _ => None,
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn holds(op: CmpOp, ord: Ordering) -> bool {
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

/// A number literal (numbers and instants); `None` for null, NaN and other types.
fn num_lit(v: &Value) -> Option<f64> {
    match v {
        Value::Num(x) if !x.is_nan() => Some(*x),
        Value::Time(t) => Some(*t as f64),
        _ => None,
    }
}

/// How an enum value compares with a literal (`None`: not comparable, the comparison is false).
pub(crate) fn key_cmp(key: &str, lit: &Value) -> Option<Ordering> {
    match lit {
        Value::Str(s) => Some(key.cmp(s)),
        Value::Num(_) | Value::Time(_) => {
            let x = num_lit(lit)?;
            let k: f64 = key.parse().ok().filter(|k: &f64| !k.is_nan())?;
            k.partial_cmp(&x)
        }
        Value::Bool(b) => key.parse::<bool>().ok().map(|k| k.cmp(b)),
        Value::Null => None,
    }
}

fn describe(e: &Expr) -> String {
    match e {
        Expr::Lit(v) => format!("literal {v:?}"),
        Expr::AsOf => "now()".into(),
        Expr::Agg(i) => format!("event aggregate #{i}"),
        Expr::Tag(i) => format!("tag #{i}"),
        Expr::Trait { path, .. } => format!("trait `{}`", path.join(".")),
        Expr::Profile(f) => format!("profile field {f:?}"),
        Expr::Event(f) => format!("event field {f:?}"),
        Expr::Property { path, .. } => format!("event property `{}`", path.join(".")),
        Expr::Arith(op, ..) => format!("arithmetic ({op:?})"),
        Expr::Neg(_) => "unary minus".into(),
        Expr::Call(f, _) => format!("function {f:?}"),
        Expr::Cmp(op, ..) => format!("comparison ({op:?})"),
        Expr::In { .. } => "`in`".into(),
        Expr::Between { .. } => "`between`".into(),
        Expr::IsNull { .. } => "`is null`".into(),
        Expr::Not(_) | Expr::And(_) | Expr::Or(_) => "boolean operator".into(),
    }
}

fn unsupported<T>(msg: String) -> Result<T, SelectError> {
    Err(SelectError::Unsupported(msg))
}

fn union_of<'b>(sets: impl Iterator<Item = &'b RoaringBitmap>) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    for s in sets {
        out |= s;
    }
    out
}

/// The ids of an enum tag whose value satisfies `pred`.
fn enum_where<'e>(e: &'e EnumTag, pred: impl Fn(&str) -> bool) -> Set<'e> {
    let mut hits = e.values().iter().filter(|(k, _)| pred(k)).map(|(_, b)| b);
    match (hits.next(), hits.next()) {
        (None, _) => Cow::Owned(RoaringBitmap::new()),
        // One value: its stored bitmap, borrowed (the flat kernels can use it).
        (Some(only), None) => Cow::Borrowed(only),
        (Some(a), Some(b)) => Cow::Owned(union_of([a, b].into_iter().chain(hits))),
    }
}

/// The bounds of `T op x` for an ordering or equality comparison (`None` for `!=`).
fn cmp_bounds(op: CmpOp, x: f64) -> Option<(Bound<f64>, Bound<f64>)> {
    Some(match op {
        CmpOp::Eq => (Bound::Included(x), Bound::Included(x)),
        CmpOp::Ne => return None,
        CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(x)),
        CmpOp::Le => (Bound::Unbounded, Bound::Included(x)),
        CmpOp::Gt => (Bound::Excluded(x), Bound::Unbounded),
        CmpOp::Ge => (Bound::Included(x), Bound::Unbounded),
    })
}

fn numeric_cmp(c: &NumericColumn, op: CmpOp, x: f64) -> RoaringBitmap {
    match cmp_bounds(op, x) {
        Some((lo, hi)) => c.range(lo, hi),
        None => c.present() - c.range(Bound::Included(x), Bound::Included(x)),
    }
}

/// Operand work (ids summed over the operands) from which counts and previews of an `and` go
/// through the flat kernels; below it the Roaring operations are as fast and need no copies.
const FLAT_MIN_IDS: u64 = 1 << 16;

/// The flat copies of an `and`'s operands, and the part of a binned numeric range the flat
/// kernel does not cover.
struct FlatOperands {
    pos: Vec<Arc<FlatBitmap>>,
    neg: Vec<Arc<FlatBitmap>>,
    /// A binned range's partial-bin ids that pass every other operand (disjoint from what
    /// the kernel counts: the kernel sees the range's whole bins as `from − until`).
    edges: Option<RoaringBitmap>,
}

impl FlatOperands {
    fn split(&self) -> (Vec<&FlatBitmap>, Vec<&FlatBitmap>) {
        (
            self.pos.iter().map(|f| &**f).collect(),
            self.neg.iter().map(|f| &**f).collect(),
        )
    }

    fn count(&self) -> u64 {
        let (pos, neg) = self.split();
        flat::and_count(&pos, &neg) + self.edges.as_ref().map_or(0, |e| e.len())
    }

    /// The first `n` members, ascending.
    fn sample(&self, n: usize) -> Vec<u32> {
        let (pos, neg) = self.split();
        let whole = flat::and_sample(&pos, &neg, n);
        let Some(edges) = &self.edges else {
            return whole;
        };
        // Two disjoint ascending lists: merge, keep the first `n`.
        let mut out = Vec::with_capacity(n.min(whole.len() + edges.len() as usize));
        let (mut a, mut b) = (whole.into_iter().peekable(), edges.iter().peekable());
        while out.len() < n {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => None,
            };
            match next {
                Some(id) => out.push(id),
                None => break,
            }
        }
        out
    }
}

/// The operands of an `and`: plain sets (sorted by size), numeric ranges kept in parts, and
/// the sets under `not`.
struct AndParts<'a> {
    pos: Vec<Set<'a>>,
    ranges: Vec<RangeSet<'a>>,
    neg: Vec<Set<'a>>,
}

impl<'a> Lowering<'a> {
    fn universe(&self) -> &'a RoaringBitmap {
        &self.snap.universe
    }

    fn tag(&self, i: usize) -> Result<(&'a str, &'a TagData), SelectError> {
        let name = self.tags.get(i).ok_or(SelectError::BadTagIndex(i))?;
        let tag = self
            .snap
            .tag(name)
            .ok_or_else(|| SelectError::UnknownTag(name.clone()))?;
        Ok((name, tag))
    }

    fn lower(&self, e: &Expr) -> Result<Set<'a>, SelectError> {
        match e {
            Expr::Lit(Value::Bool(true)) => Ok(Cow::Borrowed(self.universe())),
            Expr::Lit(Value::Bool(false) | Value::Null) => Ok(Cow::Owned(RoaringBitmap::new())),
            Expr::Tag(i) => match self.tag(*i)? {
                (_, TagData::Bool(b)) => Ok(Cow::Borrowed(b)),
                (name, other) => unsupported(format!(
                    "{} tag `{name}` used as a condition; compare it with a value",
                    other.kind()
                )),
            },
            Expr::Not(x) => {
                let inner = self.lower(x)?;
                Ok(Cow::Owned(self.universe() - &*inner))
            }
            Expr::And(xs) => {
                let parts = self.lower_and(xs)?;
                Ok(Cow::Owned(self.intersect(parts)))
            }
            Expr::Or(xs) => {
                let mut sets = xs
                    .iter()
                    .map(|x| self.lower(x))
                    .collect::<Result<Vec<_>, _>>()?;
                sets.sort_by_key(|s| std::cmp::Reverse(s.len()));
                let mut it = sets.into_iter();
                let Some(first) = it.next() else {
                    return Ok(Cow::Owned(RoaringBitmap::new()));
                };
                let Some(second) = it.next() else {
                    return Ok(first);
                };
                let mut acc = first.into_owned();
                acc |= &*second;
                for s in it {
                    acc |= &*s;
                }
                Ok(Cow::Owned(acc))
            }
            Expr::Cmp(op, l, r) => {
                let atom = self.atom(*op, l, r)?;
                self.lower_atom(atom)
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let Expr::Tag(i) = &**expr else {
                    return unsupported(format!("`in` over {}", describe(expr)));
                };
                let (_, tag) = self.tag(*i)?;
                let members: Vec<&Value> = list.iter().filter(|v| !v.is_null()).collect();
                let set = match tag {
                    TagData::Bool(b) => {
                        let has = |x: bool| {
                            members
                                .iter()
                                .any(|v| matches!(v, Value::Bool(y) if *y == x))
                        };
                        let (t, f) = (has(true), has(false));
                        let hit: Cow<'a, RoaringBitmap> = match (t, f) {
                            (true, true) => Cow::Borrowed(self.universe()),
                            (true, false) => Cow::Borrowed(b),
                            (false, true) => Cow::Owned(self.universe() - b),
                            (false, false) => Cow::Owned(RoaringBitmap::new()),
                        };
                        return Ok(if *negated {
                            Cow::Owned(self.universe() - &*hit)
                        } else {
                            hit
                        });
                    }
                    TagData::Enum(e) => {
                        let hit = |k: &str| {
                            members
                                .iter()
                                .any(|v| key_cmp(k, v) == Some(Ordering::Equal))
                        };
                        enum_where(e, |k| hit(k) != *negated).into_owned()
                    }
                    TagData::Numeric(c) => {
                        let mut hit = RoaringBitmap::new();
                        for x in members.iter().filter_map(|v| num_lit(v)) {
                            hit |= c.range(Bound::Included(x), Bound::Included(x));
                        }
                        if *negated {
                            c.present() - &hit
                        } else {
                            hit
                        }
                    }
                };
                Ok(Cow::Owned(set))
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let Expr::Tag(i) = &**expr else {
                    return unsupported(format!("`between` over {}", describe(expr)));
                };
                let (Some(lo), Some(hi)) = (literal(low), literal(high)) else {
                    return unsupported("`between` with non-literal bounds".into());
                };
                let (name, tag) = self.tag(*i)?;
                let set = match tag {
                    TagData::Numeric(c) => {
                        let not_number = |v: &Value| matches!(v, Value::Str(_) | Value::Bool(_));
                        if not_number(&lo) || not_number(&hi) {
                            return unsupported(format!(
                                "numeric tag `{name}` between non-numbers"
                            ));
                        }
                        match (num_lit(&lo), num_lit(&hi)) {
                            (Some(a), Some(b)) => {
                                let inside = c.range(Bound::Included(a), Bound::Included(b));
                                if *negated {
                                    c.present() - &inside
                                } else {
                                    inside
                                }
                            }
                            _ => RoaringBitmap::new(),
                        }
                    }
                    TagData::Enum(e) => {
                        enum_where(e, |k| match (key_cmp(k, &lo), key_cmp(k, &hi)) {
                            (Some(a), Some(b)) => {
                                (a != Ordering::Less && b != Ordering::Greater) != *negated
                            }
                            _ => false,
                        })
                        .into_owned()
                    }
                    TagData::Bool(_) => {
                        return unsupported(format!("`between` on bool tag `{name}`"))
                    }
                };
                Ok(Cow::Owned(set))
            }
            Expr::IsNull { expr, negated } => {
                let Expr::Tag(i) = &**expr else {
                    return unsupported(format!("`is null` over {}", describe(expr)));
                };
                let (_, tag) = self.tag(*i)?;
                Ok(match (tag, negated) {
                    (TagData::Bool(_), false) => Cow::Owned(RoaringBitmap::new()),
                    (TagData::Bool(_), true) => Cow::Borrowed(self.universe()),
                    (t, false) => Cow::Owned(self.universe() - t.present()),
                    (t, true) => Cow::Borrowed(t.present()),
                })
            }
            other => unsupported(format!("{} used as a condition", describe(other))),
        }
    }

    /// Lowers the operands of an `and`, splitting `not x` operands off as `x` and keeping
    /// numeric range predicates in parts.
    fn lower_and(&self, xs: &[Expr]) -> Result<AndParts<'a>, SelectError> {
        let mut parts = AndParts {
            pos: Vec::new(),
            ranges: Vec::new(),
            neg: Vec::new(),
        };
        for x in xs {
            match x {
                Expr::Not(inner) => parts.neg.push(self.lower(inner)?),
                other => match self.range_of(other)? {
                    Some(r) => parts.ranges.push(r),
                    None => parts.pos.push(self.lower(other)?),
                },
            }
        }
        parts.pos.sort_by_key(|s| s.len());
        Ok(parts)
    }

    /// Flat copies of the operands when every one is a stored bitmap and at most one is a
    /// numeric range (binned: its whole bins join the kernel as `from` and `not until`, its
    /// partial bins are intersected here), and the work is large enough to be worth it. With
    /// only negated operands the universe is the positive one.
    fn flat_operands(&self, parts: &AndParts<'a>) -> Option<FlatOperands> {
        fn stored<'s>(s: &'s Set<'_>) -> Option<&'s RoaringBitmap> {
            match s {
                Cow::Borrowed(b) => Some(b),
                Cow::Owned(_) => None,
            }
        }
        let plain_pos: Vec<&RoaringBitmap> = parts.pos.iter().map(stored).collect::<Option<_>>()?;
        let plain_neg: Vec<&RoaringBitmap> = parts.neg.iter().map(stored).collect::<Option<_>>()?;
        let (mut pos, mut neg) = (plain_pos.clone(), plain_neg.clone());
        let edges = match parts.ranges.as_slice() {
            [] => None,
            [RangeSet::Binned { from, until, edges }] => {
                pos.push(from);
                neg.extend(until.iter().copied());
                let mut acc = edges.clone();
                for p in &plain_pos {
                    acc &= *p;
                }
                for q in &plain_neg {
                    acc -= *q;
                }
                Some(acc)
            }
            _ => return None,
        };
        if pos.len() + neg.len() < 2 {
            return None;
        }
        if pos.is_empty() {
            pos.push(self.universe());
        }
        let work: u64 = pos.iter().chain(&neg).map(|b| b.len()).sum();
        if work < FLAT_MIN_IDS {
            return None;
        }
        let cache = &self.snap.flats;
        Some(FlatOperands {
            pos: pos.into_iter().map(|b| cache.get(b)).collect(),
            neg: neg.into_iter().map(|b| cache.get(b)).collect(),
            edges,
        })
    }

    /// `e` as a range over a numeric tag (`T op L` but `!=`, `T between L and L`), if it is one.
    fn range_of(&self, e: &Expr) -> Result<Option<RangeSet<'a>>, SelectError> {
        let (tag, lo, hi) = match e {
            Expr::Cmp(op, l, r) => {
                let atom = self.atom(*op, l, r)?;
                let (TagData::Numeric(c), Some(x)) = (atom.tag, num_lit(&atom.lit)) else {
                    return Ok(None);
                };
                let Some((lo, hi)) = cmp_bounds(atom.op, x) else {
                    return Ok(None);
                };
                (c, lo, hi)
            }
            Expr::Between {
                expr,
                low,
                high,
                negated: false,
            } => {
                let (Expr::Tag(i), Some(lo), Some(hi)) = (&**expr, literal(low), literal(high))
                else {
                    return Ok(None);
                };
                let (TagData::Numeric(c), Some(a), Some(b)) =
                    (self.tag(*i)?.1, num_lit(&lo), num_lit(&hi))
                else {
                    return Ok(None);
                };
                (c, Bound::Included(a), Bound::Included(b))
            }
            _ => return Ok(None),
        };
        Ok(Some(tag.range_set(lo, hi)))
    }

    /// Intersection of the positive operands (universe when there are none) minus every
    /// negated one.
    fn intersect(&self, parts: AndParts<'a>) -> RoaringBitmap {
        let AndParts {
            pos,
            mut ranges,
            neg,
        } = parts;
        let mut it = pos.into_iter();
        let mut acc = match it.next() {
            Some(first) => first.into_owned(),
            None => match ranges.pop() {
                Some(r) => r.into_bitmap(),
                None => self.universe().clone(),
            },
        };
        for s in it {
            if acc.is_empty() {
                break;
            }
            acc &= &*s;
        }
        for r in &ranges {
            if acc.is_empty() {
                break;
            }
            r.intersect_into(&mut acc);
        }
        for s in &neg {
            if acc.is_empty() {
                break;
            }
            acc -= &**s;
        }
        acc
    }

    fn atom(&self, op: CmpOp, l: &Expr, r: &Expr) -> Result<Atom<'a>, SelectError> {
        let (i, op, lit) = match (l, r, literal(l), literal(r)) {
            (Expr::Tag(i), _, _, Some(lit)) => (*i, op, lit),
            (_, Expr::Tag(i), Some(lit), _) => (*i, flip(op), lit),
            _ => {
                return unsupported(format!(
                    "comparison of {} with {}",
                    describe(l),
                    describe(r)
                ))
            }
        };
        let (name, tag) = self.tag(i)?;
        Ok(Atom { name, tag, op, lit })
    }

    fn lower_atom(&self, a: Atom<'a>) -> Result<Set<'a>, SelectError> {
        if a.lit.is_null() {
            return Ok(Cow::Owned(RoaringBitmap::new()));
        }
        Ok(match a.tag {
            TagData::Bool(b) => {
                let Value::Bool(x) = a.lit else {
                    return unsupported(format!("bool tag `{}` compared with {:?}", a.name, a.lit));
                };
                let want_true = match a.op {
                    CmpOp::Eq => x,
                    CmpOp::Ne => !x,
                    _ => {
                        return unsupported(format!("ordering comparison on bool tag `{}`", a.name))
                    }
                };
                if want_true {
                    Cow::Borrowed(b)
                } else {
                    Cow::Owned(self.universe() - b)
                }
            }
            TagData::Enum(e) => {
                enum_where(e, |k| key_cmp(k, &a.lit).is_some_and(|o| holds(a.op, o)))
            }
            TagData::Numeric(c) => match num_lit(&a.lit) {
                Some(x) => Cow::Owned(numeric_cmp(c, a.op, x)),
                None if matches!(a.lit, Value::Num(_)) => Cow::Owned(RoaringBitmap::new()),
                None => {
                    return unsupported(format!(
                        "numeric tag `{}` compared with {:?}",
                        a.name, a.lit
                    ))
                }
            },
        })
    }

    fn count(&self, e: &Expr) -> Result<u64, SelectError> {
        match e {
            Expr::Not(x) => Ok(self.universe().len().saturating_sub(self.count(x)?)),
            Expr::And(xs) => {
                let mut parts = self.lower_and(xs)?;
                if let Some(flats) = self.flat_operands(&parts) {
                    return Ok(flats.count());
                }
                // The last step as a cardinality: `|acc − last|` or `|acc ∩ largest|`.
                if let Some(last) = parts.neg.pop() {
                    if parts.pos.len() == 1 && parts.ranges.is_empty() && parts.neg.is_empty() {
                        let only = parts.pos.pop().unwrap_or_default();
                        return Ok(only.difference_len(&last));
                    }
                    return Ok(self.intersect(parts).difference_len(&last));
                }
                match (parts.pos.len(), parts.ranges.as_slice()) {
                    (0, []) => Ok(self.universe().len()),
                    (0, [only]) => Ok(only.len()),
                    (1, []) => Ok(parts.pos.iter().map(|s| s.len()).sum()),
                    (2, []) => Ok(parts.pos[0].intersection_len(&parts.pos[1])),
                    (_, []) => {
                        let largest = parts.pos.pop().unwrap_or_default();
                        Ok(self.intersect(parts).intersection_len(&largest))
                    }
                    _ => Ok(self.intersect(parts).len()),
                }
            }
            Expr::Or(xs) if xs.len() == 2 => {
                let a = self.lower(&xs[0])?;
                let b = self.lower(&xs[1])?;
                Ok(a.union_len(&b))
            }
            Expr::Cmp(op, l, r) => {
                let atom = self.atom(*op, l, r)?;
                if let (TagData::Numeric(c), Some(x)) = (atom.tag, num_lit(&atom.lit)) {
                    let point = (Bound::Included(x), Bound::Included(x));
                    return Ok(match atom.op {
                        CmpOp::Eq => c.range_len(point.0, point.1),
                        CmpOp::Ne => c.len() - c.range_len(point.0, point.1),
                        CmpOp::Lt => c.range_len(Bound::Unbounded, Bound::Excluded(x)),
                        CmpOp::Le => c.range_len(Bound::Unbounded, Bound::Included(x)),
                        CmpOp::Gt => c.range_len(Bound::Excluded(x), Bound::Unbounded),
                        CmpOp::Ge => c.range_len(Bound::Included(x), Bound::Unbounded),
                    });
                }
                Ok(self.lower_atom(atom)?.len())
            }
            other => Ok(self.lower(other)?.len()),
        }
    }
}
