//! The incremental engine: per-profile aggregate state, tag and audience values, timers.
//!
//! [`Realtime`] is a deterministic state machine with no IO and no clock of its own: the
//! caller passes `now` (ms) with every call and reads the resulting [`Change`]s with
//! [`Realtime::take_changes`]. The service ([`crate::service`]) drives it from the ingest
//! path and a timer, persists it and publishes its changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono_tz::Tz;
use portrait_tags::eval::{
    bucket_values, eval_event, eval_scalar, json_path, tag_value, EventRow, Row,
};
use portrait_tags::ir::{
    AggFunc, CmpOp, EventField, Expr, Func, Plan, ProfileField, TagBody, Window,
};
use portrait_tags::value::Value;
use serde::{Deserialize, Serialize};

use crate::input::{self, StrMap, StrSet};
use crate::state::{next_local_midnight, Entry, SlotSpec, SlotState};

/// A JSON object (traits, properties).
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Events whose time is more than this before the engine's clock are not applied
    /// incrementally: they are stored, counted, and their profile is rebuilt from its events at
    /// the next batch refresh ([`Realtime::take_stale`]).
    pub lateness_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lateness_ms: 7 * DAY_MS,
        }
    }
}

/// One stored event as the engine reads it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Log offset.
    pub offset: u64,
    /// Event time, ms.
    pub ts: i64,
    /// Message kind (`track`, `identify`, …).
    pub kind: &'a str,
    /// Event name.
    pub name: Option<&'a str>,
    /// Source name.
    pub source: &'a str,
    /// Properties as JSON text.
    pub properties: &'a str,
    /// The client's message id.
    pub message_id: &'a str,
    /// Whether the message may have changed the profile's traits or consent.
    pub touches_traits: bool,
}

impl<'a> Event<'a> {
    /// The engine's view of a stored message.
    pub fn from_message(offset: u64, m: &'a portrait_core::Message, source: &'a str) -> Self {
        let touches_traits = m.kind == portrait_core::MessageKind::Identify
            || m.kind == portrait_core::MessageKind::Group
            || !matches!(m.traits.trim(), "" | "{}")
            || m.event.as_deref() == Some(portrait_core::consent::CONSENT_EVENT);
        Event {
            offset,
            ts: m.timestamp,
            kind: m.kind.as_str(),
            name: m.event.as_deref(),
            source,
            properties: &m.properties,
            message_id: &m.message_id,
            touches_traits,
        }
    }
}

/// Why a value changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cause {
    /// An event of the profile.
    Event {
        /// Its log offset.
        offset: u64,
        /// Its message id.
        message_id: Arc<str>,
    },
    /// Time passed (a window slid, a day went by).
    Timer,
    /// Profiles merged: `from` joined `into`.
    Merge {
        /// The retired profile.
        from: u32,
        /// The survivor.
        into: u32,
    },
    /// The profile's state was rebuilt from its events (unmerge, late events, new definitions).
    Rebuild,
    /// Values re-derived after a restart.
    Recovery,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A tag's value.
    Tag,
    /// Membership of a saved audience (`true` = entered).
    Audience,
}

/// One change of one profile's tag value or audience membership.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The profile.
    pub profile: u32,
    /// Tag or audience.
    pub kind: Kind,
    /// Its name.
    pub name: Arc<str>,
    /// The value before.
    pub old: Value,
    /// The value after.
    pub new: Value,
    /// The time of the event that caused it (none for timers and rebuilds).
    pub event_time: Option<i64>,
    /// The engine's clock when it happened.
    pub at: i64,
    /// Why.
    pub cause: Cause,
}

/// Counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Events applied.
    pub events: u64,
    /// Aggregate states changed by events (tag-state updates).
    pub updates: u64,
    /// Tag and audience evaluations.
    pub evaluations: u64,
    /// Changes emitted.
    pub changes: u64,
    /// Timer firings.
    pub timers: u64,
    /// Events later than the lateness bound, left to the next batch refresh.
    pub late: u64,
    /// Merges applied.
    pub merges: u64,
}

/// A saved audience maintained in real time: an expression over the realtime tags (by plan
/// index) and traits.
#[derive(Debug, Clone, PartialEq)]
pub struct Audience {
    /// Its name.
    pub name: String,
    /// The compiled expression (`Expr::Tag(i)` = the plan's tag `i`).
    pub expr: Expr,
}

/// A set of small indexes (slots, tags) of fixed capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn with_capacity(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn of(items: &[usize], n: usize) -> Self {
        let mut b = Bits::with_capacity(n);
        for &i in items {
            b.insert(i);
        }
        b
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn meets(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }
}

/// What each tag and audience reads (derived once from the plan).
#[derive(Debug, Clone, Default)]
struct Reads {
    slots: Vec<usize>,
    tags: Vec<usize>,
    /// `slots` and `tags` as sets (filled by [`Reads::index`]).
    slot_set: Bits,
    tag_set: Bits,
    traits: bool,
    /// The top-level traits it reads.
    trait_keys: Vec<String>,
    /// Arguments of the step functions (`days_since` …) it reads.
    steps: Vec<(Func, Expr)>,
}

impl Reads {
    fn index(mut self, slots: usize, tags: usize) -> Self {
        self.slot_set = Bits::of(&self.slots, slots);
        self.tag_set = Bits::of(&self.tags, tags);
        self
    }

    /// Whether a change of `slots`, `tags` (or the traits) reaches what this reads.
    fn sees(&self, slots: &Bits, tags: &Bits, traits_changed: bool) -> bool {
        (traits_changed && self.traits) || self.slot_set.meets(slots) || self.tag_set.meets(tags)
    }
}

/// Buffers `settle` reuses from one call to the next.
#[derive(Debug, Default)]
struct Scratch {
    slots: Bits,
    tags: Bits,
    out: Vec<(Kind, usize, Value, Value)>,
}

impl Scratch {
    fn new(shape: &Shape) -> Self {
        Scratch {
            slots: Bits::with_capacity(shape.slots.len()),
            tags: Bits::with_capacity(shape.plan.tags.len()),
            out: Vec::new(),
        }
    }
}

fn reads_of(e: &Expr, first_seen: usize) -> Reads {
    let mut r = Reads::default();
    e.walk(&mut |x| match x {
        Expr::Agg(i) => r.slots.push(*i),
        Expr::Tag(i) => r.tags.push(*i),
        Expr::Trait { path, .. } => {
            r.traits = true;
            r.trait_keys.extend(path.first().cloned());
        }
        Expr::Profile(ProfileField::FirstSeen) => r.slots.push(first_seen),
        Expr::Profile(ProfileField::LastSeen) => r.slots.push(first_seen + 1),
        Expr::Call(f @ (Func::DaysSince | Func::HoursSince | Func::CalendarDaysSince), args) => {
            if let Some(a) = args.first() {
                r.steps.push((*f, a.clone()));
            }
        }
        _ => {}
    });
    r.slots.sort_unstable();
    r.slots.dedup();
    r.tags.sort_unstable();
    r.tags.dedup();
    r
}

fn merge_reads(a: &mut Reads, b: Reads) {
    a.slots.extend(b.slots);
    a.slots.sort_unstable();
    a.slots.dedup();
    a.tags.extend(b.tags);
    a.tags.sort_unstable();
    a.tags.dedup();
    a.traits |= b.traits;
    a.trait_keys.extend(b.trait_keys);
    a.steps.extend(b.steps);
}

/// The event names an aggregate filter requires (`event = "X"` or `event in (…)` at the top
/// or inside a conjunction); `None` when any event may match.
fn required_names(filter: &Expr) -> Option<Vec<String>> {
    match filter {
        Expr::Cmp(CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
            (Expr::Event(EventField::Name), Expr::Lit(Value::Str(s)))
            | (Expr::Lit(Value::Str(s)), Expr::Event(EventField::Name)) => {
                Some(vec![s.to_string()])
            }
            _ => None,
        },
        Expr::In {
            expr,
            list,
            negated: false,
        } if matches!(expr.as_ref(), Expr::Event(EventField::Name)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect(),
        Expr::And(parts) => parts.iter().find_map(required_names),
        _ => None,
    }
}

/// The top-level properties `e` reads, added to `keys`; whether it reads any.
fn read_properties(e: &Expr, keys: &mut Vec<String>) -> bool {
    let mut found = false;
    e.walk(&mut |x| {
        if let Expr::Property { path, .. } = x {
            found = true;
            if let Some(first) = path.first().filter(|k| !keys.contains(k)) {
                keys.push(first.clone());
            }
        }
    });
    found
}

/// The compiled shape of the engine: slots, indexes and read sets.
struct Shape {
    plan: Plan,
    /// The plan's aggregates, then `first_seen` and `last_seen`.
    slots: Vec<SlotSpec>,
    /// Slot filters and arguments (none for the two profile fields).
    exprs: Vec<(Option<Expr>, Option<Expr>)>,
    props: Vec<bool>,
    /// The top-level properties any slot reads (the only ones parsed).
    prop_keys: Vec<String>,
    /// The top-level traits any tag or audience reads (the only ones fetched).
    trait_keys: Arc<[String]>,
    /// Slots whose filter is only a test of the event name (decided by the name index).
    name_only: Vec<bool>,
    by_name: StrMap<String, Vec<usize>>,
    any_event: Vec<usize>,
    tag_reads: Vec<Reads>,
    audiences: Vec<Audience>,
    audience_reads: Vec<Reads>,
    names: Vec<Arc<str>>,
    audience_names: Vec<Arc<str>>,
}

impl Shape {
    fn new(plan: Plan, audiences: Vec<Audience>) -> Self {
        let n = plan.aggregates.len();
        let mut slots: Vec<SlotSpec> = plan
            .aggregates
            .iter()
            .map(|a| SlotSpec {
                func: a.func,
                window: a.window,
            })
            .collect();
        let mut exprs: Vec<(Option<Expr>, Option<Expr>)> = plan
            .aggregates
            .iter()
            .map(|a| (a.filter.clone(), a.arg.clone()))
            .collect();
        for func in [AggFunc::FirstTime, AggFunc::LastTime] {
            slots.push(SlotSpec {
                func,
                window: Window::All,
            });
            exprs.push((None, None));
        }
        let mut prop_keys = Vec::new();
        let props = exprs
            .iter()
            .map(|(f, a)| {
                f.iter()
                    .chain(a.iter())
                    .fold(false, |any, e| read_properties(e, &mut prop_keys) | any)
            })
            .collect();
        let name_only = exprs
            .iter()
            .map(|(f, _)| match f {
                Some(Expr::Cmp(CmpOp::Eq, a, b)) => matches!(
                    (a.as_ref(), b.as_ref()),
                    (Expr::Event(EventField::Name), Expr::Lit(Value::Str(_)))
                        | (Expr::Lit(Value::Str(_)), Expr::Event(EventField::Name))
                ),
                Some(Expr::In {
                    expr,
                    list,
                    negated: false,
                }) => {
                    matches!(expr.as_ref(), Expr::Event(EventField::Name))
                        && list.iter().all(|v| v.as_str().is_some())
                }
                _ => false,
            })
            .collect();
        let mut by_name: StrMap<String, Vec<usize>> = StrMap::default();
        let mut any_event = Vec::new();
        for (i, (f, _)) in exprs.iter().enumerate() {
            match f.as_ref().and_then(required_names) {
                Some(names) => {
                    for name in names {
                        by_name.entry(name).or_default().push(i);
                    }
                }
                None => any_event.push(i),
            }
        }
        let body_reads = |body: &TagBody| -> Reads {
            let mut r = Reads::default();
            match body {
                TagBody::Rule(e) | TagBody::Metric(e) | TagBody::Buckets { of: e, .. } => {
                    merge_reads(&mut r, reads_of(e, n));
                }
                TagBody::Stage(cases) => {
                    for (_, e) in cases {
                        merge_reads(&mut r, reads_of(e, n));
                    }
                }
                TagBody::External => {}
            }
            r
        };
        let (n_slots, n_tags) = (slots.len(), plan.tags.len());
        let tag_reads: Vec<Reads> = plan
            .tags
            .iter()
            .map(|t| body_reads(&t.body).index(n_slots, n_tags))
            .collect();
        let audience_reads: Vec<Reads> = audiences
            .iter()
            .map(|a| reads_of(&a.expr, n).index(n_slots, n_tags))
            .collect();
        let mut trait_keys: Vec<String> = Vec::new();
        for k in tag_reads
            .iter()
            .chain(&audience_reads)
            .flat_map(|r| &r.trait_keys)
        {
            if !trait_keys.contains(k) {
                trait_keys.push(k.clone());
            }
        }
        let names = plan
            .tags
            .iter()
            .map(|t| Arc::from(t.name.as_str()))
            .collect();
        let audience_names = audiences
            .iter()
            .map(|a| Arc::from(a.name.as_str()))
            .collect();
        Shape {
            plan,
            slots,
            exprs,
            props,
            prop_keys,
            trait_keys: trait_keys.into(),
            name_only,
            by_name,
            any_event,
            tag_reads,
            audiences,
            audience_reads,
            names,
            audience_names,
        }
    }
}

/// One profile's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// Aggregate states of the slots that have seen an event.
    slots: Vec<(u16, SlotState)>,
    /// Events of all-time aggregates dated after the clock: applied when their time comes.
    pending: Vec<(u16, Entry)>,
    /// Tag values, in plan order.
    values: Vec<Value>,
    /// Audience memberships.
    members: Vec<bool>,
    /// When the profile is next re-evaluated without an event (`i64::MAX`: never).
    due: i64,
    /// The instant the engine's timer index holds for this profile (`i64::MAX`: none), so
    /// that putting a state back touches the index only when `due` moved.
    #[serde(skip, default = "never")]
    scheduled: i64,
}

fn never() -> i64 {
    i64::MAX
}

impl ProfileState {
    /// Tag values, in plan order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Audience memberships, in order.
    pub fn members(&self) -> &[bool] {
        &self.members
    }

    fn slot_mut(&mut self, i: usize, spec: &SlotSpec) -> &mut SlotState {
        let at = match self.slots.binary_search_by_key(&(i as u16), |(k, _)| *k) {
            Ok(at) => at,
            Err(at) => {
                self.slots.insert(at, (i as u16, spec.empty()));
                at
            }
        };
        &mut self.slots[at].1
    }

    fn slot(&self, i: usize) -> Option<&SlotState> {
        self.slots
            .binary_search_by_key(&(i as u16), |(k, _)| *k)
            .ok()
            .map(|at| &self.slots[at].1)
    }
}

struct StateRow<'a> {
    shape: &'a Shape,
    st: &'a ProfileState,
    traits: Option<&'a JsonMap>,
    values: &'a [Value],
    now: i64,
}

impl<'a> StateRow<'a> {
    fn new(
        shape: &'a Shape,
        st: &'a ProfileState,
        traits: Option<&'a JsonMap>,
        values: &'a [Value],
        now: i64,
    ) -> Self {
        StateRow {
            shape,
            st,
            traits,
            values,
            now,
        }
    }
}

impl Row for StateRow<'_> {
    fn agg(&self, i: usize) -> Value {
        let spec = &self.shape.slots[i];
        match self.st.slot(i) {
            Some(s) => spec.value(s, self.now, self.shape.plan.time_zone),
            None => spec.value(&spec.empty(), self.now, self.shape.plan.time_zone),
        }
    }
    fn tag(&self, i: usize) -> Value {
        self.values.get(i).cloned().unwrap_or(Value::Null)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        self.traits.and_then(|m| json_path(m, path))
    }
    fn profile(&self, f: ProfileField) -> Value {
        let n = self.shape.plan.aggregates.len();
        self.agg(match f {
            ProfileField::FirstSeen => n,
            ProfileField::LastSeen => n + 1,
        })
    }
}

/// Distinct strings kept once for all profiles (categories, cities, SKUs…).
const INTERNED: usize = 1 << 20;

/// `v` with its string shared with equal strings seen before (up to [`INTERNED`] of them).
fn intern(strings: &mut StrSet<Arc<str>>, v: Value) -> Value {
    let Value::Str(s) = v else { return v };
    if let Some(shared) = strings.get(&s) {
        return Value::Str(shared.clone());
    }
    if strings.len() < INTERNED {
        strings.insert(s.clone());
    }
    Value::Str(s)
}

/// A state to keep: moved out when no snapshot holds it, copied when one does.
fn unshare(st: Arc<ProfileState>) -> ProfileState {
    Arc::try_unwrap(st).unwrap_or_else(|shared| (*shared).clone())
}

/// The value of tag `t` for one profile.
fn eval_tag(shape: &Shape, t: usize, row: &StateRow<'_>) -> Value {
    let tz = shape.plan.time_zone;
    match &shape.plan.tags[t].body {
        TagBody::Buckets {
            of,
            scheme,
            reverse,
        } => bucket_values(&[eval_scalar(of, row, row.now, tz)], scheme, *reverse)
            .pop()
            .unwrap_or(Value::Null),
        body => tag_value(body, row, row.now, tz),
    }
}

/// The next instant after `now` at which step function `f` of `arg` changes value.
fn next_step(f: Func, arg: &Value, now: i64, tz: Tz) -> Option<i64> {
    let Value::Time(t) = arg else { return None };
    let unit = match f {
        Func::DaysSince => DAY_MS,
        Func::HoursSince => HOUR_MS,
        _ => return Some(next_local_midnight(now, tz)),
    };
    let k = (now - t).div_euclid(unit);
    Some(t + (k + 1) * unit)
}

/// Values equal for change detection (numbers bitwise-equal or both NaN).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.to_bits() == y.to_bits() || (x == y),
        _ => a == b,
    }
}

/// The incremental engine.
pub struct Realtime {
    shape: Shape,
    config: Config,
    /// States by dense id, shared with a snapshot being written (copy on write).
    profiles: Vec<Option<Arc<ProfileState>>>,
    timers: BTreeSet<(i64, u32)>,
    defaults: Vec<Value>,
    default_members: Vec<bool>,
    now: i64,
    counters: Counters,
    changes: Vec<Change>,
    stale: BTreeSet<u32>,
    strings: StrSet<Arc<str>>,
    scratch: Scratch,
}

/// Everything needed to restore the engine ([`Realtime::export`], [`Realtime::import`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    /// Profiles with state (shared with the running engine until it changes them).
    pub profiles: Vec<(u32, Arc<ProfileState>)>,
    /// The engine clock.
    pub now: i64,
    /// Counters.
    pub counters: Counters,
    /// Profiles waiting for a rebuild.
    pub stale: Vec<u32>,
}

impl Realtime {
    /// An engine for the realtime tags of `plan` (every tag of it is maintained) and the given
    /// audiences, with its clock at `now`.
    pub fn new(plan: Plan, audiences: Vec<Audience>, config: Config, now: i64) -> Self {
        let shape = Shape::new(plan, audiences);
        let scratch = Scratch::new(&shape);
        let mut rt = Realtime {
            defaults: Vec::new(),
            default_members: Vec::new(),
            shape,
            config,
            profiles: Vec::new(),
            timers: BTreeSet::new(),
            now,
            counters: Counters::default(),
            changes: Vec::new(),
            stale: BTreeSet::new(),
            strings: StrSet::default(),
            scratch,
        };
        let empty = ProfileState::default();
        let (values, members) = rt.evaluate_fresh(&empty, None);
        rt.defaults = values;
        rt.default_members = members;
        rt
    }

    /// The plan the engine maintains.
    pub fn plan(&self) -> &Plan {
        &self.shape.plan
    }

    /// The audiences the engine maintains.
    pub fn audiences(&self) -> &[Audience] {
        &self.shape.audiences
    }

    /// The engine's settings.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Ids of the profiles with state.
    pub fn profile_ids(&self) -> Vec<u32> {
        self.profiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Every profile's values by name (to carry published values across a change of
    /// definitions).
    pub fn published_by_name(&self) -> HashMap<u32, Vec<(Kind, String, Value)>> {
        let mut out = HashMap::new();
        for (i, st) in self.profiles.iter().enumerate() {
            let Some(st) = st else { continue };
            let mut list: Vec<(Kind, String, Value)> = self
                .shape
                .names
                .iter()
                .zip(&st.values)
                .map(|(n, v)| (Kind::Tag, n.to_string(), v.clone()))
                .collect();
            list.extend(
                self.shape
                    .audience_names
                    .iter()
                    .zip(&st.members)
                    .map(|(n, m)| (Kind::Audience, n.to_string(), Value::Bool(*m))),
            );
            out.insert(i as u32, list);
        }
        out
    }

    /// Resets every profile's published values to `published(id)` (by name; the values of
    /// an empty profile for names not listed) and makes it due for re-evaluation, so the next
    /// [`Realtime::settle_all`] publishes exactly what differs.
    pub fn reset_published(
        &mut self,
        mut published: impl FnMut(u32) -> Option<Vec<(Kind, String, Value)>>,
    ) {
        let now = self.now;
        for id in self.profile_ids() {
            let Some(mut shared) = self.take_state(id) else {
                continue;
            };
            let st = Arc::make_mut(&mut shared);
            st.values = self.defaults.clone();
            st.members = self.default_members.clone();
            for (kind, name, v) in published(id).unwrap_or_default() {
                match kind {
                    Kind::Tag => {
                        if let Some(i) = self.shape.names.iter().position(|n| n.as_ref() == name) {
                            st.values[i] = v;
                        }
                    }
                    Kind::Audience => {
                        if let Some(i) = self
                            .shape
                            .audience_names
                            .iter()
                            .position(|n| n.as_ref() == name)
                        {
                            st.members[i] = v.truthy();
                        }
                    }
                }
            }
            st.due = now;
            self.put_state(id, shared);
        }
    }

    /// The engine's clock (never goes back).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Profiles with state.
    pub fn profiles(&self) -> usize {
        self.profiles.iter().filter(|p| p.is_some()).count()
    }

    /// The top-level traits the tags and audiences read (shared, for a trait reader to keep).
    pub fn trait_keys(&self) -> Arc<[String]> {
        self.shape.trait_keys.clone()
    }

    /// Whether any tag or audience reads traits.
    pub fn reads_traits(&self) -> bool {
        self.shape.tag_reads.iter().any(|r| r.traits)
            || self.shape.audience_reads.iter().any(|r| r.traits)
    }

    fn tick(&mut self, now: i64) {
        self.now = self.now.max(now);
    }

    /// The current tag values of a profile, in plan order (the values of an empty profile when
    /// it has no state).
    pub fn values(&self, profile: u32) -> Vec<(&str, Value)> {
        let vals = match self.state(profile) {
            Some(st) => &st.values,
            None => &self.defaults,
        };
        self.shape
            .names
            .iter()
            .zip(vals)
            .map(|(n, v)| (n.as_ref(), v.clone()))
            .collect()
    }

    /// The audiences a profile is in.
    pub fn memberships(&self, profile: u32) -> Vec<&str> {
        let members = match self.state(profile) {
            Some(st) => &st.members,
            None => &self.default_members,
        };
        self.shape
            .audience_names
            .iter()
            .zip(members)
            .filter(|(_, m)| **m)
            .map(|(n, _)| n.as_ref())
            .collect()
    }

    fn state(&self, profile: u32) -> Option<&ProfileState> {
        self.profiles
            .get(profile as usize)
            .and_then(|p| p.as_deref())
    }

    /// Reads through the states of `profiles` before they are applied, so that their memory
    /// is fetched together (the loads of different profiles overlap) rather than one miss at a
    /// time while each is applied. Returns a value of no meaning (keeps the reads).
    pub fn warm(&self, profiles: impl Iterator<Item = u32>) -> u64 {
        const LINE: usize = 64;
        let value_step = (LINE / std::mem::size_of::<Value>()).max(1);
        let mut sum = 0u64;
        for p in profiles {
            let Some(st) = self.state(p) else { continue };
            // Every slot (so every line of the slot list), and for windowed slots the newest
            // end of their own event buffer, where the event goes.
            for (_, slot) in &st.slots {
                sum = sum.wrapping_add(match slot {
                    SlotState::Times(v) => v.last().map_or(0, |e| e.1),
                    SlotState::Entries(v) => v.last().map_or(0, |e| e.offset),
                    _ => 0,
                });
            }
            for v in st.values.iter().step_by(value_step) {
                sum = sum.wrapping_add(u64::from(v.is_null()));
            }
            sum = sum.wrapping_add(st.members.len() as u64);
        }
        std::hint::black_box(sum)
    }

    /// Takes the changes emitted since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Takes the profiles that received events later than the lateness bound: rebuild them
    /// from their events ([`Realtime::rebuild`]) at the next batch refresh.
    pub fn take_stale(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.stale).into_iter().collect()
    }

    /// The next instant a timer is due.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Takes a state out to change it in place (`Arc::make_mut`: copied only while a snapshot
    /// shares it) and put it back ([`Realtime::put_state`]); its timer stays scheduled
    /// meanwhile.
    fn take_state(&mut self, profile: u32) -> Option<Arc<ProfileState>> {
        self.profiles.get_mut(profile as usize)?.take()
    }

    /// Takes a state out for good (its timer too).
    fn drop_state(&mut self, profile: u32) -> Option<ProfileState> {
        let st = unshare(self.take_state(profile)?);
        if st.scheduled != i64::MAX {
            self.timers.remove(&(st.scheduled, profile));
        }
        Some(st)
    }

    /// [`Realtime::take_state`], or a new state for a profile without one.
    fn take_or_fresh(&mut self, profile: u32) -> Arc<ProfileState> {
        self.take_state(profile)
            .unwrap_or_else(|| self.fresh_state())
    }

    fn fresh_state(&self) -> Arc<ProfileState> {
        Arc::new(ProfileState {
            values: self.defaults.clone(),
            members: self.default_members.clone(),
            due: i64::MAX,
            scheduled: i64::MAX,
            ..ProfileState::default()
        })
    }

    fn put_state(&mut self, profile: u32, mut shared: Arc<ProfileState>) {
        let i = profile as usize;
        if self.profiles.len() <= i {
            self.profiles.resize_with(i + 1, || None);
        }
        // Taken out of `profiles`, so held here alone: no copy.
        let st = Arc::make_mut(&mut shared);
        if st.scheduled != st.due {
            if st.scheduled != i64::MAX {
                self.timers.remove(&(st.scheduled, profile));
            }
            if st.due != i64::MAX {
                self.timers.insert((st.due, profile));
            }
            st.scheduled = st.due;
        }
        self.profiles[i] = Some(shared);
    }

    /// Folds one event into a state; the slots it changed are marked for the next
    /// [`Realtime::settle`].
    fn fold(&mut self, st: &mut ProfileState, ev: &Event<'_>) {
        let shape = &self.shape;
        let tz = shape.plan.time_zone;
        let mut props: Option<JsonMap> = None;
        let empty = JsonMap::new();
        let named = ev
            .name
            .and_then(|n| shape.by_name.get(n))
            .map_or(&[][..], Vec::as_slice);
        let mut changed = 0;
        for &i in named.iter().chain(&shape.any_event) {
            if shape.props[i] && props.is_none() {
                props = Some(input::properties(ev.properties, &shape.prop_keys));
            }
            let row = EventRow {
                name: ev.name,
                kind: ev.kind,
                source: ev.source,
                timestamp_ms: ev.ts,
                offset: ev.offset,
                properties: props.as_ref().unwrap_or(&empty),
            };
            let (filter, arg) = &shape.exprs[i];
            if let Some(f) = filter.as_ref().filter(|_| !shape.name_only[i]) {
                if !eval_event(f, &row, self.now, tz).truthy() {
                    continue;
                }
            }
            let arg = arg
                .as_ref()
                .map_or(Value::Null, |a| eval_event(a, &row, self.now, tz));
            let arg = intern(&mut self.strings, arg);
            let entry = Entry {
                ts: ev.ts,
                offset: ev.offset,
                arg,
            };
            let spec = &shape.slots[i];
            if spec.window == Window::All && ev.ts > self.now {
                st.pending.push((i as u16, entry));
                continue;
            }
            if spec.push(st.slot_mut(i, spec), entry) {
                self.scratch.slots.insert(i);
                changed += 1;
            }
        }
        self.counters.updates += changed;
    }

    /// Applies one stored event of `profile` after merging `merged` into it (the identity
    /// outcome of the message), re-evaluates what it changed and schedules the next timer.
    /// `traits` reads a profile's current traits (called only when a tag reads traits).
    pub fn apply(
        &mut self,
        profile: u32,
        merged: &[u32],
        ev: &Event<'_>,
        now: i64,
        traits: &dyn Fn(u32) -> Option<JsonMap>,
    ) {
        self.tick(now);
        for &m in merged {
            self.merge(profile, m, traits);
        }
        self.counters.events += 1;
        if ev.ts < self.now.saturating_sub(self.config.lateness_ms) {
            self.counters.late += 1;
            self.stale.insert(profile);
            return;
        }
        let mut shared = self.take_or_fresh(profile);
        let st = Arc::make_mut(&mut shared);
        self.fold(st, ev);
        let cause = Cause::Event {
            offset: ev.offset,
            message_id: Arc::from(ev.message_id),
        };
        self.settle(
            profile,
            st,
            ev.touches_traits,
            false,
            Some(ev.ts),
            cause,
            traits,
        );
        self.put_state(profile, shared);
    }

    /// Applies an event to the state only (no evaluation, no change): recovery replays the log
    /// this way and settles once at the end with [`Realtime::settle_all`].
    pub fn replay(&mut self, profile: u32, ev: &Event<'_>) {
        let mut shared = self.take_or_fresh(profile);
        let st = Arc::make_mut(&mut shared);
        self.fold(st, ev);
        // Settled later, all at once (`settle_all`): nothing to carry to the next settle.
        self.scratch.slots.clear();
        st.due = self.now;
        self.put_state(profile, shared);
    }

    /// Re-evaluates every tag of the profiles whose timers are due at `now` (all profiles
    /// touched by [`Realtime::replay`] are due).
    pub fn advance(&mut self, now: i64, traits: &dyn Fn(u32) -> Option<JsonMap>) {
        self.tick(now);
        while let Some(&(due, p)) = self.timers.first() {
            if due > self.now {
                break;
            }
            self.timers.pop_first();
            self.counters.timers += 1;
            let Some(mut shared) = self.take_state(p) else {
                continue;
            };
            let st = Arc::make_mut(&mut shared);
            // Its timer entry was just popped.
            st.scheduled = i64::MAX;
            st.due = i64::MAX;
            self.settle(p, st, false, true, None, Cause::Timer, traits);
            self.put_state(p, shared);
        }
    }

    /// Like [`Realtime::advance`] with `cause` for every change (recovery).
    pub fn settle_all(&mut self, cause: Cause, traits: &dyn Fn(u32) -> Option<JsonMap>) {
        let due: Vec<u32> = self
            .timers
            .iter()
            .filter(|(t, _)| *t <= self.now)
            .map(|(_, p)| *p)
            .collect();
        for p in due {
            let Some(mut shared) = self.take_state(p) else {
                continue;
            };
            let st = Arc::make_mut(&mut shared);
            st.due = i64::MAX;
            self.settle(p, st, false, true, None, cause.clone(), traits);
            self.put_state(p, shared);
        }
    }

    /// Merges profile `retired` into `survivor`: the retired profile's values leave (changes to
    /// null / exit), the states combine and the survivor is re-evaluated.
    pub fn merge(&mut self, survivor: u32, retired: u32, traits: &dyn Fn(u32) -> Option<JsonMap>) {
        if survivor == retired {
            return;
        }
        let Some(old) = self.drop_state(retired) else {
            return;
        };
        self.counters.merges += 1;
        let cause = Cause::Merge {
            from: retired,
            into: survivor,
        };
        self.emit_departure(retired, &old, cause.clone());
        let mut shared = self.take_or_fresh(survivor);
        let st = Arc::make_mut(&mut shared);
        for (i, s) in old.slots {
            let spec = &self.shape.slots[i as usize];
            let spec = spec.clone();
            spec.merge(st.slot_mut(i as usize, &spec), s);
        }
        st.pending.extend(old.pending);
        self.settle(survivor, st, true, true, None, cause, traits);
        self.put_state(survivor, shared);
    }

    fn emit_departure(&mut self, profile: u32, st: &ProfileState, cause: Cause) {
        for (t, v) in st.values.iter().enumerate() {
            if !v.is_null() {
                self.push_change(
                    profile,
                    Kind::Tag,
                    t,
                    v.clone(),
                    Value::Null,
                    None,
                    cause.clone(),
                );
            }
        }
        for (a, m) in st.members.iter().enumerate() {
            if *m {
                let (old, new) = (Value::Bool(true), Value::Bool(false));
                self.push_change(profile, Kind::Audience, a, old, new, None, cause.clone());
            }
        }
    }

    /// Drops a profile's state without a change (erasure: the change stream forgets the
    /// person too).
    pub fn forget(&mut self, profile: u32) {
        self.drop_state(profile);
        self.stale.remove(&profile);
    }

    /// Retires a profile that no longer exists (e.g. split away): its values leave.
    pub fn retire(&mut self, profile: u32) {
        if let Some(st) = self.drop_state(profile) {
            self.emit_departure(profile, &st, Cause::Rebuild);
        }
    }

    /// Rebuilds a profile's state from all its events (after an unmerge, late events, or new
    /// definitions) and emits what differs from the values it had.
    pub fn rebuild<'e>(
        &mut self,
        profile: u32,
        events: impl IntoIterator<Item = Event<'e>>,
        now: i64,
        traits: &dyn Fn(u32) -> Option<JsonMap>,
    ) {
        self.tick(now);
        self.stale.remove(&profile);
        let mut shared = self.take_or_fresh(profile);
        let st = Arc::make_mut(&mut shared);
        st.slots.clear();
        st.pending.clear();
        for ev in events {
            self.fold(st, &ev);
        }
        self.settle(profile, st, true, true, None, Cause::Rebuild, traits);
        self.put_state(profile, shared);
    }

    /// Applies due pending events, prunes, re-evaluates the tags that read changed inputs (the
    /// slots [`Realtime::fold`] changed since the last call; all when `all`), emits changes and
    /// schedules the next timer.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        profile: u32,
        st: &mut ProfileState,
        traits_changed: bool,
        all: bool,
        event_time: Option<i64>,
        cause: Cause,
        traits: &dyn Fn(u32) -> Option<JsonMap>,
    ) {
        let now = self.now;
        let tz = self.shape.plan.time_zone;
        // A timer that fell due before this call: everything is re-evaluated.
        let all = all || st.due <= now;
        let mut scratch = std::mem::take(&mut self.scratch);
        let slots = &mut scratch.slots;
        if !st.pending.is_empty() {
            let pending = std::mem::take(&mut st.pending);
            for (i, e) in pending {
                if e.ts <= now {
                    let spec = &self.shape.slots[i as usize];
                    spec.push(st.slot_mut(i as usize, spec), e);
                    slots.insert(i as usize);
                } else {
                    st.pending.push((i, e));
                }
            }
        }
        for (i, s) in &mut st.slots {
            self.shape.slots[*i as usize].prune(s, now, tz);
        }
        let shape = &self.shape;
        let n_tags = shape.plan.tags.len();
        let changed_tags = &mut scratch.tags;
        let out = &mut scratch.out;
        // The profile's traits, read once and only if something evaluated reads them.
        let mut fetched: Option<Option<JsonMap>> = None;
        let fetch = |reads: &Reads, fetched: &mut Option<Option<JsonMap>>| {
            if reads.traits && fetched.is_none() {
                *fetched = Some(traits(profile));
            }
        };
        let mut values = std::mem::take(&mut st.values);
        values.resize(n_tags, Value::Null);
        for t in 0..n_tags {
            let r = &shape.tag_reads[t];
            if !all && !r.sees(slots, changed_tags, traits_changed) {
                continue;
            }
            self.counters.evaluations += 1;
            fetch(r, &mut fetched);
            let traits_ref = fetched.as_ref().and_then(Option::as_ref);
            let v = eval_tag(
                shape,
                t,
                &StateRow::new(shape, st, traits_ref, &values, now),
            );
            if !same(&v, &values[t]) {
                // Kept: its string shared with equal ones.
                let v = intern(&mut self.strings, v);
                changed_tags.insert(t);
                out.push((
                    Kind::Tag,
                    t,
                    std::mem::replace(&mut values[t], v.clone()),
                    v,
                ));
            }
        }
        let mut members = std::mem::take(&mut st.members);
        members.resize(shape.audiences.len(), false);
        for (a, aud) in shape.audiences.iter().enumerate() {
            let r = &shape.audience_reads[a];
            if !all && !r.sees(slots, changed_tags, traits_changed) {
                continue;
            }
            self.counters.evaluations += 1;
            fetch(r, &mut fetched);
            let traits_ref = fetched.as_ref().and_then(Option::as_ref);
            let row = StateRow::new(shape, st, traits_ref, &values, now);
            let m = eval_scalar(&aud.expr, &row, now, tz).truthy();
            if m != members[a] {
                members[a] = m;
                out.push((Kind::Audience, a, Value::Bool(!m), Value::Bool(m)));
            }
        }
        // The next instant anything can change without an event.
        let mut due = st
            .pending
            .iter()
            .map(|(_, e)| e.ts)
            .min()
            .unwrap_or(i64::MAX);
        for (i, s) in &st.slots {
            if let Some(t) = shape.slots[*i as usize].next_change(s, now, tz) {
                due = due.min(t);
            }
        }
        {
            for r in shape.tag_reads.iter().chain(&shape.audience_reads) {
                if !r.steps.is_empty() {
                    fetch(r, &mut fetched);
                }
            }
            let traits_ref = fetched.as_ref().and_then(Option::as_ref);
            let row = StateRow::new(shape, st, traits_ref, &values, now);
            for r in shape.tag_reads.iter().chain(&shape.audience_reads) {
                for (f, arg) in &r.steps {
                    let v = eval_scalar(arg, &row, now, tz);
                    if let Some(t) = next_step(*f, &v, now, tz) {
                        due = due.min(t);
                    }
                }
            }
        }
        st.values = values;
        st.members = members;
        st.due = due;
        scratch.slots.clear();
        scratch.tags.clear();
        for (kind, i, old, new) in scratch.out.drain(..) {
            self.push_change(profile, kind, i, old, new, event_time, cause.clone());
        }
        self.scratch = scratch;
    }

    #[allow(clippy::too_many_arguments)]
    fn push_change(
        &mut self,
        profile: u32,
        kind: Kind,
        i: usize,
        old: Value,
        new: Value,
        event_time: Option<i64>,
        cause: Cause,
    ) {
        let name = match kind {
            Kind::Tag => self.shape.names[i].clone(),
            Kind::Audience => self.shape.audience_names[i].clone(),
        };
        self.counters.changes += 1;
        self.changes.push(Change {
            profile,
            kind,
            name,
            old,
            new,
            event_time,
            at: self.now,
            cause,
        });
    }

    fn evaluate_fresh(
        &self,
        st: &ProfileState,
        traits: Option<&JsonMap>,
    ) -> (Vec<Value>, Vec<bool>) {
        let shape = &self.shape;
        let mut values = vec![Value::Null; shape.plan.tags.len()];
        for t in 0..values.len() {
            values[t] = eval_tag(
                shape,
                t,
                &StateRow::new(shape, st, traits, &values, self.now),
            );
        }
        let members = shape
            .audiences
            .iter()
            .map(|a| {
                let row = StateRow::new(shape, st, traits, &values, self.now);
                eval_scalar(&a.expr, &row, self.now, shape.plan.time_zone).truthy()
            })
            .collect();
        (values, members)
    }

    /// Sets a profile's last published values (recovery folds the change stream into the
    /// snapshot's values with this, so the stream never repeats a change).
    pub fn set_value(&mut self, profile: u32, kind: Kind, name: &str, value: Value) {
        let idx = match kind {
            Kind::Tag => self.shape.names.iter().position(|n| n.as_ref() == name),
            Kind::Audience => self
                .shape
                .audience_names
                .iter()
                .position(|n| n.as_ref() == name),
        };
        let Some(i) = idx else { return };
        let mut shared = self.take_or_fresh(profile);
        let st = Arc::make_mut(&mut shared);
        match kind {
            Kind::Tag => st.values[i] = value,
            Kind::Audience => st.members[i] = value.truthy(),
        }
        st.due = st.due.min(self.now);
        self.put_state(profile, shared);
    }

    /// The engine's state for a snapshot.
    pub fn export(&self) -> Saved {
        Saved {
            profiles: self
                .profiles
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i as u32, p.clone())))
                .collect(),
            now: self.now,
            counters: self.counters,
            stale: self.stale.iter().copied().collect(),
        }
    }

    /// Restores a snapshot taken by [`Realtime::export`] of an engine with the same plan.
    pub fn import(&mut self, saved: Saved) {
        self.profiles.clear();
        self.timers.clear();
        self.now = self.now.max(saved.now);
        self.counters = saved.counters;
        self.stale = saved.stale.into_iter().collect();
        for (id, mut st) in saved.profiles {
            Arc::make_mut(&mut st).scheduled = i64::MAX;
            self.put_state(id, st);
        }
    }

    /// Approximate heap bytes held per profile state (benchmarks).
    pub fn approx_bytes(&self) -> usize {
        let value_bytes = std::mem::size_of::<Value>();
        self.profiles
            .iter()
            .flatten()
            .map(|st| {
                let slots: usize = st
                    .slots
                    .iter()
                    .map(|(_, s)| {
                        std::mem::size_of::<(u16, SlotState)>()
                            + match s {
                                SlotState::Times(v) => v.capacity() * 16,
                                SlotState::Entries(v) => {
                                    v.capacity() * std::mem::size_of::<Entry>()
                                }
                                SlotState::Bag(b) => b.capacity() * (value_bytes + 8),
                                _ => 0,
                            }
                    })
                    .sum();
                std::mem::size_of::<ProfileState>()
                    + slots
                    + st.values.capacity() * value_bytes
                    + st.members.capacity()
                    + st.pending.capacity() * std::mem::size_of::<(u16, Entry)>()
            })
            .sum::<usize>()
            + self.profiles.capacity() * std::mem::size_of::<Option<Arc<ProfileState>>>()
            + self.timers.len() * 16
    }
}
