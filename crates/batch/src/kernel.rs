//! The fused aggregation kernel: every aggregate of a plan, per surviving profile id, in one
//! scan of the lake's event files.
//!
//! How a scan works:
//! 1. `profile_map.parquet` becomes a `Vec<u32>` (id → survivor); every event's `profile_id`
//!    is re-keyed by indexing it.
//! 2. Each slot's window becomes an instant interval ([`crate::window::bounds`]); only date
//!    partitions that can hold an event of some window are listed, and inside a partition only
//!    slots whose window meets that date are considered.
//! 3. Each slot's filter is split into conjuncts. A conjunct reading only one of `type`,
//!    `event`, `source` (the dictionary-encoded columns) is evaluated once per dictionary value
//!    of each batch, giving per value a bitset of the slots it lets through; a row's candidate
//!    slots are the AND of three bitsets and the file's slots, then the windows (two integer
//!    compares per candidate). `properties.x <op> number` is a direct lookup; other conjuncts
//!    and arguments go to `portrait_tags::eval::eval_event` (the reference semantics).
//! 4. Per file, the cheap columns are read first; `properties` is then read with a row
//!    selection of only the rows where a candidate slot reads properties, and each selected
//!    row's JSON is split once ([`crate::json`]) and shared by its slots.
//! 5. Updates of numeric slots are buffered per file and applied slot by slot in tight loops,
//!    so the random accesses into the per-id state arrays overlap their cache misses.
//! 6. Files are shared out to `threads` workers, each with its own state arrays (indexed by
//!    survivor id), merged when all are done.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{mpsc, Arc};

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, TimeUnit};
use chrono_tz::Tz;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::ProjectionMask;
use portrait_tags::eval::{compare_values as compare, eval_event, EventRow};
use portrait_tags::ir::{AggFunc, Aggregate, CmpOp, Column, EventField, Expr, Plan};
use portrait_tags::value::{Type, Value};

use crate::error::BatchError;
use crate::eval::ReadSet;
use crate::json::{self, JsonObject};
use crate::window;

/// Tuning of [`aggregate`].
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// Worker threads (files are shared out among them). At least 1.
    pub threads: usize,
    /// Rows per decoded Arrow batch.
    pub batch_size: usize,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            threads: 2,
            batch_size: 65_536,
        }
    }
}

/// Progress of a scan, reported after each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Files finished.
    pub files_done: usize,
    /// Files to scan (after partition pruning).
    pub files_total: usize,
    /// Events read so far.
    pub events: u64,
}

/// Aggregates of a plan, per dense profile id.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregated {
    /// One column per `Plan::aggregates` slot, each of length `id_space`, indexed by survivor id.
    pub columns: Vec<Column>,
    /// Live profile ids (ids that are their own survivor in `profile_map`), ascending.
    pub live: Vec<u32>,
    /// Ids covered by the columns: the largest id in `profile_map` + 1.
    pub id_space: usize,
    /// Event rows read (after partition pruning).
    pub events_scanned: u64,
    /// Part files read.
    pub files_scanned: usize,
}

/// The re-keying table and live ids of a lake.
#[derive(Debug, Clone)]
pub struct ProfileMap {
    /// `survivor[id]`, [`NO_PROFILE`] for ids without one.
    pub survivor: Vec<u32>,
    /// Ids that are their own survivor, ascending.
    pub live: Vec<u32>,
}

/// Marks an id without a survivor in [`ProfileMap::survivor`].
pub const NO_PROFILE: u32 = u32::MAX;

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, BatchError> {
    let f = File::open(path).map_err(|e| BatchError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| BatchError::parquet(path, e))
}

fn u32_col(batch: &RecordBatch, name: &str) -> Result<UInt32Array, BatchError> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| BatchError::InvalidLake(format!("missing column {name}")))?;
    Ok(cast(c, &DataType::UInt32)?
        .as_primitive::<arrow::datatypes::UInt32Type>()
        .clone())
}

/// Reads `profile_map.parquet`.
pub fn read_profile_map(lake_dir: &Path) -> Result<ProfileMap, BatchError> {
    let path = lake_dir.join("profile_map.parquet");
    let reader = open_parquet(&path)?
        .build()
        .map_err(|e| BatchError::parquet(&path, e))?;
    let mut pairs: Vec<(u32, Option<u32>)> = Vec::new();
    for batch in reader {
        let batch = batch?;
        let ids = u32_col(&batch, "id")?;
        let surv = u32_col(&batch, "survivor")?;
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                continue;
            }
            pairs.push((ids.value(i), surv.is_valid(i).then(|| surv.value(i))));
        }
    }
    let space = pairs
        .iter()
        .map(|(id, s)| (*id).max(s.unwrap_or(0)) as usize + 1)
        .max()
        .unwrap_or(0);
    let mut survivor = vec![NO_PROFILE; space];
    for (id, s) in &pairs {
        if let Some(s) = s {
            survivor[*id as usize] = *s;
        }
    }
    let live = (0..space as u32)
        .filter(|i| survivor[*i as usize] == *i)
        .collect();
    Ok(ProfileMap { survivor, live })
}

/// One part file to scan, with its partition day.
#[derive(Debug, Clone)]
pub(crate) struct PartFile {
    pub path: PathBuf,
    pub day: i64,
}

/// Part files of the partitions whose day lies in one of `days` (sorted disjoint ranges).
pub(crate) fn list_files(
    lake_dir: &Path,
    days: &[(i64, i64)],
) -> Result<Vec<PartFile>, BatchError> {
    let events = lake_dir.join("events");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&events) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(BatchError::io(&events, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BatchError::io(&events, e))?;
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(|n| n.strip_prefix("date=")) else {
            continue;
        };
        let Some(day) = window::parse_day(date) else {
            continue;
        };
        if days.iter().any(|(a, b)| *a <= day && day <= *b) {
            dirs.push((day, entry.path()));
        }
    }
    dirs.sort();
    for (day, dir) in dirs {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| BatchError::io(&dir, e))? {
            let entry = entry.map_err(|e| BatchError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(n) = name.to_str() else { continue };
            if n.starts_with('.') || n.starts_with('_') || !n.ends_with(".parquet") {
                continue;
            }
            files.push(entry.path());
        }
        files.sort();
        out.extend(files.into_iter().map(|path| PartFile { path, day }));
    }
    Ok(out)
}

/// How a slot's argument is computed.
#[derive(Debug, Clone)]
enum ArgPlan {
    /// No argument (count, first/last time).
    None,
    /// A property converted to Number: a direct lookup.
    PropNum(Vec<String>),
    /// Anything else.
    General(Expr),
}

/// A filter conjunct tested per row.
#[derive(Debug, Clone)]
enum Residual {
    /// `properties.x <op> literal` with a Number property: a direct lookup.
    PropCmp {
        path: Vec<String>,
        op: CmpOp,
        lit: f64,
        /// The literal is on the left.
        flipped: bool,
    },
    /// Anything else (`eval_event`).
    General(Expr),
}

fn as_prop_cmp(e: &Expr) -> Option<Residual> {
    let Expr::Cmp(op, a, b) = e else { return None };
    let prop = |x: &Expr| match x {
        Expr::Property {
            path,
            ty: Type::Number,
        } => Some(path.clone()),
        _ => None,
    };
    let lit = |x: &Expr| match x {
        Expr::Lit(Value::Num(v)) => Some(*v),
        _ => None,
    };
    if let (Some(path), Some(lit)) = (prop(a), lit(b)) {
        return Some(Residual::PropCmp {
            path,
            op: *op,
            lit,
            flipped: false,
        });
    }
    if let (Some(lit), Some(path)) = (lit(a), prop(b)) {
        return Some(Residual::PropCmp {
            path,
            op: *op,
            lit,
            flipped: true,
        });
    }
    None
}

fn cmp_holds(op: CmpOp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => o == Equal,
        CmpOp::Ne => o != Equal,
        CmpOp::Lt => o == Less,
        CmpOp::Le => o != Greater,
        CmpOp::Gt => o == Greater,
        CmpOp::Ge => o != Less,
    }
}

/// A slot compiled for the scan.
#[derive(Debug, Clone)]
pub(crate) struct SlotPlan {
    func: AggFunc,
    lo: i64,
    hi: i64,
    days: Option<(i64, i64)>,
    kind_conj: Vec<Expr>,
    name_conj: Vec<Expr>,
    source_conj: Vec<Expr>,
    residual: Vec<Residual>,
    arg: ArgPlan,
    result: Type,
    /// Reads properties at all (the row's JSON is split).
    needs_props: bool,
    /// The general evaluator reads properties (the row's JSON is parsed into a map).
    needs_map: bool,
    needs_row: bool,
    /// Updates are buffered per file and applied in one tight loop per slot (numbers only).
    batched: bool,
}

/// A buffered update of a batched slot.
#[derive(Debug, Clone, Copy)]
struct Pend {
    sid: u32,
    x: f64,
    ts: i64,
    off: u64,
}

fn flatten_and(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(v) => v.iter().for_each(|x| flatten_and(x, out)),
        other => out.push(other.clone()),
    }
}

fn compile_slot(
    i: usize,
    agg: &Aggregate,
    as_of_ms: i64,
    plan: &Plan,
) -> Result<SlotPlan, BatchError> {
    let (lo, hi) = window::bounds(agg.window, as_of_ms, plan.time_zone);
    let mut s = SlotPlan {
        func: agg.func,
        lo,
        hi,
        days: window::partition_days(lo, hi),
        kind_conj: Vec::new(),
        name_conj: Vec::new(),
        source_conj: Vec::new(),
        residual: Vec::new(),
        arg: ArgPlan::None,
        result: agg.result_type(),
        needs_props: false,
        needs_map: false,
        needs_row: false,
        batched: false,
    };
    let mut conj = Vec::new();
    if let Some(f) = &agg.filter {
        flatten_and(f, &mut conj);
    }
    for c in conj {
        let r = ReadSet::of(&c);
        if r.profile_scope {
            return Err(BatchError::Unsupported(format!(
                "aggregate slot {i}: the filter reads a profile-scope value"
            )));
        }
        if !r.props && !r.timestamp && r.dict_fields() <= 1 {
            if r.name {
                s.name_conj.push(c);
            } else if r.source {
                s.source_conj.push(c);
            } else {
                s.kind_conj.push(c);
            }
        } else {
            s.needs_props |= r.props;
            match as_prop_cmp(&c) {
                Some(fast) => s.residual.push(fast),
                None => {
                    s.needs_map |= r.props;
                    s.residual.push(Residual::General(c));
                }
            }
        }
    }
    let takes_arg = !matches!(
        agg.func,
        AggFunc::Count | AggFunc::FirstTime | AggFunc::LastTime
    );
    if takes_arg {
        match &agg.arg {
            None => {
                return Err(BatchError::Unsupported(format!(
                    "aggregate slot {i}: {:?} without an argument",
                    agg.func
                )))
            }
            Some(a) => {
                let r = ReadSet::of(a);
                if r.profile_scope {
                    return Err(BatchError::Unsupported(format!(
                        "aggregate slot {i}: the argument reads a profile-scope value"
                    )));
                }
                s.needs_props |= r.props;
                s.arg = match a {
                    Expr::Property {
                        path,
                        ty: Type::Number,
                    } => ArgPlan::PropNum(path.clone()),
                    other => {
                        s.needs_map |= r.props;
                        ArgPlan::General(other.clone())
                    }
                };
            }
        }
    }
    s.needs_row = !s.residual.is_empty() || matches!(s.arg, ArgPlan::General(_));
    s.batched = match s.func {
        AggFunc::Count | AggFunc::Sum | AggFunc::Avg | AggFunc::FirstTime | AggFunc::LastTime => {
            true
        }
        AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last => s.result == Type::Number,
        AggFunc::CountDistinct | AggFunc::MostFrequent => false,
    };
    Ok(s)
}

/// Hashable, orderable aggregate argument values (count_distinct, most_frequent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Bool(bool),
    Num(u64),
    Time(i64),
    Str(Arc<str>),
}

impl Key {
    fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Key::Bool(*b),
            Value::Num(x) => Key::Num(if *x == 0.0 {
                0f64.to_bits()
            } else {
                x.to_bits()
            }),
            Value::Time(t) => Key::Time(*t),
            Value::Str(s) => Key::Str(s.clone()),
        })
    }

    fn value(&self) -> Value {
        match self {
            Key::Bool(b) => Value::Bool(*b),
            Key::Num(x) => Value::Num(f64::from_bits(*x)),
            Key::Time(t) => Value::Time(*t),
            Key::Str(s) => Value::Str(s.clone()),
        }
    }
}

fn empty_column(ty: Type, n: usize) -> Column {
    match ty {
        Type::Str => Column::Str(vec![None; n]),
        Type::Time => Column::Time(vec![i64::MIN; n]),
        Type::Bool => Column::Bool(vec![None; n]),
        Type::Number | Type::Null => Column::Num(vec![f64::NAN; n]),
    }
}

fn set_value(col: &mut Column, id: usize, v: Value) {
    match (col, v) {
        (Column::Num(c), Value::Num(x)) => c[id] = x,
        (Column::Time(c), Value::Time(x)) => c[id] = x,
        (Column::Str(c), Value::Str(x)) => c[id] = Some(x),
        (Column::Bool(c), Value::Bool(x)) => c[id] = Some(x),
        _ => {}
    }
}

fn is_set(col: &Column, id: usize) -> bool {
    match col {
        Column::Num(c) => !c[id].is_nan(),
        Column::Time(c) => c[id] != i64::MIN,
        Column::Str(c) => c[id].is_some(),
        Column::Bool(c) => c[id].is_some(),
    }
}

/// Per-slot partial state, indexed by survivor id.
#[derive(Debug)]
enum State {
    Count(Vec<u32>),
    Sum(Vec<f64>),
    Avg(Vec<f64>, Vec<u32>),
    Extreme {
        col: Column,
        max: bool,
    },
    Edge {
        key: Vec<(i64, u64)>,
        col: Column,
        last: bool,
    },
    EdgeTime {
        t: Vec<i64>,
        last: bool,
    },
    Distinct(HashMap<u32, HashSet<Key>>),
    Mode(HashMap<u32, HashMap<Key, u32>>, Type),
}

impl State {
    fn new(s: &SlotPlan, n: usize) -> State {
        match s.func {
            AggFunc::Count => State::Count(vec![0; n]),
            AggFunc::Sum => State::Sum(vec![0.0; n]),
            AggFunc::Avg => State::Avg(vec![0.0; n], vec![0; n]),
            AggFunc::Min | AggFunc::Max => State::Extreme {
                col: empty_column(s.result, n),
                max: s.func == AggFunc::Max,
            },
            AggFunc::First | AggFunc::Last => State::Edge {
                key: vec![(0, 0); n],
                col: empty_column(s.result, n),
                last: s.func == AggFunc::Last,
            },
            AggFunc::FirstTime | AggFunc::LastTime => State::EdgeTime {
                t: vec![i64::MIN; n],
                last: s.func == AggFunc::LastTime,
            },
            AggFunc::CountDistinct => State::Distinct(HashMap::new()),
            AggFunc::MostFrequent => State::Mode(HashMap::new(), s.result),
        }
    }

    /// Adds one matching event. `v` is the argument (ignored by count and first/last time;
    /// never null for the others).
    #[inline]
    fn update(&mut self, id: u32, ts: i64, off: u64, v: Value) {
        let i = id as usize;
        match self {
            State::Count(c) => c[i] += 1,
            State::Sum(s) => {
                if let Value::Num(x) = v {
                    s[i] += x
                }
            }
            State::Avg(s, n) => {
                if let Value::Num(x) = v {
                    s[i] += x;
                    n[i] += 1;
                }
            }
            State::Extreme { col, max } => match (&mut *col, &v) {
                (Column::Num(c), Value::Num(x)) => {
                    let cur = c[i];
                    if cur.is_nan() || (*max && *x > cur) || (!*max && *x < cur) {
                        c[i] = *x;
                    }
                }
                _ => {
                    let cur = col.get(i);
                    let better = match compare(&v, &cur) {
                        None => cur.is_null(),
                        Some(o) => {
                            o == if *max {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Less
                            }
                        }
                    };
                    if better {
                        set_value(col, i, v);
                    }
                }
            },
            State::Edge { key, col, last } => {
                let k = (ts, off);
                if !is_set(col, i) || (*last && k > key[i]) || (!*last && k < key[i]) {
                    key[i] = k;
                    set_value(col, i, v);
                }
            }
            State::EdgeTime { t, last } => {
                let cur = t[i];
                if cur == i64::MIN || (*last && ts > cur) || (!*last && ts < cur) {
                    t[i] = ts;
                }
            }
            State::Distinct(m) => {
                if let Some(k) = Key::of(&v) {
                    m.entry(id).or_default().insert(k);
                }
            }
            State::Mode(m, _) => {
                if let Some(k) = Key::of(&v) {
                    *m.entry(id).or_default().entry(k).or_insert(0) += 1;
                }
            }
        }
    }

    /// Applies buffered updates of a batched slot in one tight loop (independent random
    /// accesses, so the CPU overlaps their cache misses).
    fn update_many(&mut self, list: &[Pend]) {
        match self {
            State::Count(c) => {
                for p in list {
                    c[p.sid as usize] += 1;
                }
            }
            State::Sum(s) => {
                for p in list {
                    s[p.sid as usize] += p.x;
                }
            }
            State::Avg(s, n) => {
                for p in list {
                    s[p.sid as usize] += p.x;
                    n[p.sid as usize] += 1;
                }
            }
            State::Extreme {
                col: Column::Num(c),
                max,
            } => {
                let max = *max;
                for p in list {
                    let cur = &mut c[p.sid as usize];
                    if cur.is_nan() || (max && p.x > *cur) || (!max && p.x < *cur) {
                        *cur = p.x;
                    }
                }
            }
            State::Edge {
                key,
                col: Column::Num(c),
                last,
            } => {
                let last = *last;
                for p in list {
                    let i = p.sid as usize;
                    let k = (p.ts, p.off);
                    if c[i].is_nan() || (last && k > key[i]) || (!last && k < key[i]) {
                        key[i] = k;
                        c[i] = p.x;
                    }
                }
            }
            State::EdgeTime { t, last } => {
                let last = *last;
                for p in list {
                    let cur = &mut t[p.sid as usize];
                    if *cur == i64::MIN || (last && p.ts > *cur) || (!last && p.ts < *cur) {
                        *cur = p.ts;
                    }
                }
            }
            other => {
                for p in list {
                    other.update(p.sid, p.ts, p.off, Value::Num(p.x));
                }
            }
        }
    }

    fn merge(&mut self, other: State) {
        match (self, other) {
            (State::Count(a), State::Count(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
            (State::Sum(a), State::Sum(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
            (State::Avg(a, an), State::Avg(b, bn)) => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                an.iter_mut().zip(bn).for_each(|(x, y)| *x += y);
            }
            (State::Extreme { col, max }, State::Extreme { col: other, .. }) => {
                for i in 0..other.len() {
                    let v = other.get(i);
                    if v.is_null() {
                        continue;
                    }
                    let cur = col.get(i);
                    let better = match compare(&v, &cur) {
                        None => cur.is_null(),
                        Some(o) => {
                            o == if *max {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Less
                            }
                        }
                    };
                    if better {
                        set_value(col, i, v);
                    }
                }
            }
            (
                State::Edge { key, col, last },
                State::Edge {
                    key: okey,
                    col: ocol,
                    ..
                },
            ) => {
                for i in 0..ocol.len() {
                    if !is_set(&ocol, i) {
                        continue;
                    }
                    let k = okey[i];
                    if !is_set(col, i) || (*last && k > key[i]) || (!*last && k < key[i]) {
                        key[i] = k;
                        set_value(col, i, ocol.get(i));
                    }
                }
            }
            (State::EdgeTime { t, last }, State::EdgeTime { t: o, .. }) => {
                for (x, y) in t.iter_mut().zip(o) {
                    if y != i64::MIN && (*x == i64::MIN || (*last && y > *x) || (!*last && y < *x))
                    {
                        *x = y;
                    }
                }
            }
            (State::Distinct(a), State::Distinct(b)) => {
                for (id, set) in b {
                    a.entry(id).or_default().extend(set);
                }
            }
            (State::Mode(a, _), State::Mode(b, _)) => {
                for (id, counts) in b {
                    let e = a.entry(id).or_default();
                    for (k, c) in counts {
                        *e.entry(k).or_insert(0) += c;
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(self, n: usize) -> Column {
        match self {
            State::Count(c) => Column::Num(c.into_iter().map(f64::from).collect()),
            State::Sum(s) => Column::Num(s),
            State::Avg(s, c) => Column::Num(
                s.into_iter()
                    .zip(c)
                    .map(|(s, c)| if c == 0 { f64::NAN } else { s / f64::from(c) })
                    .collect(),
            ),
            State::Extreme { col, .. } | State::Edge { col, .. } => col,
            State::EdgeTime { t, .. } => Column::Time(t),
            State::Distinct(m) => {
                let mut out = vec![0.0; n];
                for (id, set) in m {
                    out[id as usize] = set.len() as f64;
                }
                Column::Num(out)
            }
            State::Mode(m, ty) => {
                let mut col = empty_column(ty, n);
                for (id, counts) in m {
                    let mut best: Option<(&Key, u32)> = None;
                    for (k, c) in &counts {
                        let take = match best {
                            None => true,
                            Some((bk, bc)) => {
                                *c > bc
                                    || (*c == bc
                                        && compare(&k.value(), &bk.value())
                                            == Some(std::cmp::Ordering::Less))
                            }
                        };
                        if take {
                            best = Some((k, *c));
                        }
                    }
                    if let Some((k, _)) = best {
                        set_value(&mut col, id as usize, k.value());
                    }
                }
                col
            }
        }
    }
}

/// The compiled plan shared by the workers.
struct Scan<'a> {
    slots: Vec<SlotPlan>,
    words: usize,
    props_mask: Vec<u64>,
    map_mask: Vec<u64>,
    min_lo: i64,
    max_hi: i64,
    need_offset: bool,
    survivor: &'a [u32],
    /// Bit `id` set when `survivor[id] == id` (most ids): a 1/32-size table that stays in
    /// cache, so the full map is only read for retired ids.
    identity: Vec<u64>,
    as_of: i64,
    tz: Tz,
    batch_size: usize,
}

fn bit(words: &mut [u64], i: usize) {
    words[i / 64] |= 1 << (i % 64);
}

fn dict_of(batch: &RecordBatch, name: &str) -> Result<DictionaryArray<Int32Type>, BatchError> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| BatchError::InvalidLake(format!("missing column {name}")))?;
    let want = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let c = if c.data_type() == &want {
        c.clone()
    } else {
        cast(c, &want)?
    };
    Ok(c.as_dictionary::<Int32Type>().clone())
}

/// Per dictionary value (and a last entry for null keys), the slots whose conjuncts on this
/// field all pass.
fn dict_masks(
    scan: &Scan<'_>,
    values: &StringArray,
    field: EventField,
    empty: &serde_json::Map<String, serde_json::Value>,
) -> Vec<u64> {
    let w = scan.words;
    let n = values.len();
    let mut masks = vec![0u64; (n + 1) * w];
    for k in 0..=n {
        let v: Option<&str> = (k < n && values.is_valid(k)).then(|| values.value(k));
        let row = EventRow {
            name: v,
            kind: v.unwrap_or(""),
            source: v.unwrap_or(""),
            timestamp_ms: 0,
            offset: 0,
            properties: empty,
        };
        for (si, s) in scan.slots.iter().enumerate() {
            let conj = match field {
                EventField::Name => &s.name_conj,
                EventField::Type => &s.kind_conj,
                _ => &s.source_conj,
            };
            let pass = if field != EventField::Name && v.is_none() {
                // type and source are never null; a null key passes only trivially.
                conj.is_empty()
            } else {
                conj.iter()
                    .all(|c| eval_event(c, &row, scan.as_of, scan.tz).truthy())
            };
            if pass {
                bit(&mut masks[k * w..(k + 1) * w], si);
            }
        }
    }
    masks
}

#[inline]
fn key_index(keys: &DictionaryArray<Int32Type>, i: usize, n_values: usize) -> usize {
    if keys.is_null(i) {
        return n_values;
    }
    usize::try_from(keys.keys().value(i)).map_or(n_values, |k| k.min(n_values))
}

fn dict_value(values: &StringArray, k: usize) -> Option<&str> {
    (k < values.len() && values.is_valid(k)).then(|| values.value(k))
}

impl Scan<'_> {
    fn test(&self, c: &Residual, row: &EventRow<'_>, obj: &JsonObject<'_>) -> bool {
        match c {
            Residual::PropCmp {
                path,
                op,
                lit,
                flipped,
            } => {
                let Some(v) = obj.get(path).and_then(json::to_num) else {
                    return false;
                };
                let o = if *flipped {
                    lit.partial_cmp(&v)
                } else {
                    v.partial_cmp(lit)
                };
                o.is_some_and(|o| cmp_holds(*op, o))
            }
            Residual::General(e) => eval_event(e, row, self.as_of, self.tz).truthy(),
        }
    }
    fn file_mask(&self, day: i64) -> Vec<u64> {
        let mut m = vec![0u64; self.words];
        for (i, s) in self.slots.iter().enumerate() {
            if s.days.is_some_and(|(a, b)| a <= day && day <= b) {
                bit(&mut m, i);
            }
        }
        m
    }

    /// Scans one part file in two phases: the cheap columns of every row first (re-keying,
    /// dictionary masks, windows), then `properties` only for the rows where a slot that
    /// reads properties is still a candidate (a row selection: the other rows' strings are
    /// never materialised), then the updates.
    fn scan_file(&self, file: &PartFile, states: &mut [State]) -> Result<u64, BatchError> {
        let path = &file.path;
        let f = File::open(path).map_err(|e| BatchError::io(path, e))?;
        let meta = ArrowReaderMetadata::load(&f, ArrowReaderOptions::default())
            .map_err(|e| BatchError::parquet(path, e))?;
        let schema = meta.schema().clone();
        let col = |c: &str| {
            schema
                .index_of(c)
                .map_err(|_| BatchError::InvalidLake(format!("{}: no column {c}", path.display())))
        };
        let mut cols = vec!["profile_id", "timestamp", "type", "event", "source_name"];
        if self.need_offset {
            cols.push("offset");
        }
        let idx = cols.iter().map(|c| col(c)).collect::<Result<Vec<_>, _>>()?;
        let cheap = ProjectionMask::roots(meta.parquet_schema(), idx);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            f.try_clone().map_err(|e| BatchError::io(path, e))?,
            meta.clone(),
        )
        .with_projection(cheap)
        .with_batch_size(self.batch_size)
        .build()
        .map_err(|e| BatchError::parquet(path, e))?;
        let file_mask = self.file_mask(file.day);
        let mut events = 0u64;
        let mut batches = Vec::new();
        let mut hits = Hits::default();
        for batch in reader {
            let batch = CheapBatch::new(self, &batch?)?;
            self.prepare(&batch, batches.len(), events, &file_mask, &mut hits);
            events += batch.rows as u64;
            batches.push(batch);
        }
        let props = if hits.selected.is_empty() {
            None
        } else {
            let mut selectors = Vec::new();
            let mut at = 0usize;
            for &r in &hits.selected {
                let r = r as usize;
                if r > at {
                    selectors.push(RowSelector::skip(r - at));
                }
                selectors.push(RowSelector::select(1));
                at = r + 1;
            }
            let total = usize::try_from(events).unwrap_or(usize::MAX);
            if total > at {
                selectors.push(RowSelector::skip(total - at));
            }
            let mask = ProjectionMask::roots(meta.parquet_schema(), [col("properties")?]);
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta)
                .with_projection(mask)
                .with_row_selection(RowSelection::from(selectors))
                .with_batch_size(self.batch_size)
                .build()
                .map_err(|e| BatchError::parquet(path, e))?;
            let mut parts: Vec<ArrayRef> = Vec::new();
            for b in reader {
                let b = b?;
                parts.push(cast(b.column(0), &DataType::Utf8)?);
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            let all = if refs.is_empty() {
                None
            } else {
                Some(arrow::compute::concat(&refs)?.as_string::<i32>().clone())
            };
            if all.as_ref().map_or(0, |a| a.len()) != hits.selected.len() {
                return Err(BatchError::InvalidLake(format!(
                    "{}: properties rows do not match the selection",
                    path.display()
                )));
            }
            all
        };
        self.apply(&batches, &hits, props.as_ref(), states);
        Ok(events)
    }

    /// Phase 1: the candidate slots of every row of a batch.
    fn prepare(&self, b: &CheapBatch, bi: usize, base: u64, file_mask: &[u64], hits: &mut Hits) {
        let w = self.words;
        let mut row_mask = vec![0u64; w];
        for i in 0..b.rows {
            if b.pids.is_null(i) || b.ts.is_null(i) {
                continue;
            }
            let pid = b.pids.value(i);
            let p = pid as usize;
            let own = self
                .identity
                .get(p >> 6)
                .is_some_and(|w| (w >> (p & 63)) & 1 == 1);
            let sid = if own {
                pid
            } else {
                match self.survivor.get(p) {
                    Some(&s) => s,
                    None => continue,
                }
            };
            if sid == NO_PROFILE {
                continue;
            }
            let ts = b.ts.value(i);
            if ts <= self.min_lo || ts > self.max_hi {
                continue;
            }
            let (tk, nk, sk) = (b.tk(i), b.nk(i), b.sk(i));
            let mut any = 0u64;
            let mut need_props = false;
            for j in 0..w {
                let mut m = file_mask[j] & b.km[tk * w + j] & b.nm[nk * w + j] & b.sm[sk * w + j];
                let mut bits = m;
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let s = &self.slots[j * 64 + bit];
                    if ts <= s.lo || ts > s.hi {
                        m &= !(1u64 << bit);
                    }
                }
                row_mask[j] = m;
                any |= m;
                need_props |= m & self.props_mask[j] != 0;
            }
            if any == 0 {
                continue;
            }
            let props_at = if need_props {
                hits.selected
                    .push(u32::try_from(base + i as u64).unwrap_or(u32::MAX));
                hits.selected.len() as u32 - 1
            } else {
                u32::MAX
            };
            hits.rows.push(Hit {
                batch: bi as u32,
                row: i as u32,
                sid,
                props_at,
            });
            hits.masks.extend_from_slice(&row_mask);
        }
    }

    /// Phase 2: residual tests, arguments and state updates of the candidate rows.
    fn apply(
        &self,
        batches: &[CheapBatch],
        hits: &Hits,
        props: Option<&StringArray>,
        states: &mut [State],
    ) {
        let w = self.words;
        let empty = serde_json::Map::new();
        let mut obj = JsonObject::new();
        let mut pending: Vec<Vec<Pend>> = vec![Vec::new(); self.slots.len()];
        for (h, masks) in hits.rows.iter().zip(hits.masks.chunks_exact(w)) {
            let Some(b) = batches.get(h.batch as usize) else {
                continue;
            };
            let i = h.row as usize;
            let text = match props {
                Some(p) if h.props_at != u32::MAX && p.is_valid(h.props_at as usize) => {
                    p.value(h.props_at as usize)
                }
                _ => "",
            };
            obj.parse(text);
            let need_map = masks.iter().zip(&self.map_mask).any(|(m, x)| m & x != 0);
            let map = if need_map {
                Some(
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                        .unwrap_or_default(),
                )
            } else {
                None
            };
            let ts = b.ts.value(i);
            let off = b.offsets.as_ref().map_or(0, |o| o.value(i));
            let row = EventRow {
                name: dict_value(&b.nv, b.nk(i)),
                kind: dict_value(&b.kv, b.tk(i)).unwrap_or(""),
                source: dict_value(&b.sv, b.sk(i)).unwrap_or(""),
                timestamp_ms: ts,
                offset: off,
                properties: map.as_ref().unwrap_or(&empty),
            };
            for (j, m) in masks.iter().enumerate() {
                let mut bits = *m;
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let si = j * 64 + bit;
                    let s = &self.slots[si];
                    if s.needs_row && !s.residual.iter().all(|c| self.test(c, &row, &obj)) {
                        continue;
                    }
                    let v = match &s.arg {
                        ArgPlan::None => Value::Null,
                        ArgPlan::PropNum(path) => match obj.get(path).and_then(json::to_num) {
                            Some(x) => Value::Num(x),
                            None => continue,
                        },
                        ArgPlan::General(e) => {
                            let v = eval_event(e, &row, self.as_of, self.tz);
                            if v.is_null() {
                                continue;
                            }
                            v
                        }
                    };
                    if s.batched {
                        let x = match v {
                            Value::Num(x) => x,
                            Value::Null if matches!(s.arg, ArgPlan::None) => 0.0,
                            _ => continue,
                        };
                        pending[si].push(Pend {
                            sid: h.sid,
                            x,
                            ts,
                            off,
                        });
                    } else {
                        states[si].update(h.sid, ts, off, v);
                    }
                }
            }
        }
        for (state, list) in states.iter_mut().zip(&pending) {
            state.update_many(list);
        }
    }
}

/// Candidate rows of one file.
#[derive(Debug, Default)]
struct Hits {
    rows: Vec<Hit>,
    /// `words` mask words per row of `rows`.
    masks: Vec<u64>,
    /// File row numbers whose `properties` are needed, ascending.
    selected: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    batch: u32,
    row: u32,
    sid: u32,
    /// Index into the selected `properties`, `u32::MAX` for none.
    props_at: u32,
}

/// The cheap columns of one batch, with the per-dictionary-value slot masks.
struct CheapBatch {
    rows: usize,
    pids: UInt32Array,
    ts: TimestampMillisecondArray,
    kinds: DictionaryArray<Int32Type>,
    names: DictionaryArray<Int32Type>,
    sources: DictionaryArray<Int32Type>,
    kv: StringArray,
    nv: StringArray,
    sv: StringArray,
    offsets: Option<UInt64Array>,
    km: Vec<u64>,
    nm: Vec<u64>,
    sm: Vec<u64>,
}

impl CheapBatch {
    fn new(scan: &Scan<'_>, batch: &RecordBatch) -> Result<CheapBatch, BatchError> {
        let pids = u32_col(batch, "profile_id")?;
        let ts_col = batch
            .column_by_name("timestamp")
            .ok_or_else(|| BatchError::InvalidLake("missing column timestamp".into()))?;
        let ts = cast(ts_col, &DataType::Timestamp(TimeUnit::Millisecond, None))?
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .clone();
        let kinds = dict_of(batch, "type")?;
        let names = dict_of(batch, "event")?;
        let sources = dict_of(batch, "source_name")?;
        let kv = cast(kinds.values(), &DataType::Utf8)?
            .as_string::<i32>()
            .clone();
        let nv = cast(names.values(), &DataType::Utf8)?
            .as_string::<i32>()
            .clone();
        let sv = cast(sources.values(), &DataType::Utf8)?
            .as_string::<i32>()
            .clone();
        let offsets = if scan.need_offset {
            let c = batch
                .column_by_name("offset")
                .ok_or_else(|| BatchError::InvalidLake("missing column offset".into()))?;
            Some(cast(c, &DataType::UInt64)?.as_primitive().clone())
        } else {
            None
        };
        let empty = serde_json::Map::new();
        Ok(CheapBatch {
            rows: batch.num_rows(),
            km: dict_masks(scan, &kv, EventField::Type, &empty),
            nm: dict_masks(scan, &nv, EventField::Name, &empty),
            sm: dict_masks(scan, &sv, EventField::Source, &empty),
            pids,
            ts,
            kinds,
            names,
            sources,
            kv,
            nv,
            sv,
            offsets,
        })
    }

    #[inline]
    fn tk(&self, i: usize) -> usize {
        key_index(&self.kinds, i, self.kv.len())
    }

    #[inline]
    fn nk(&self, i: usize) -> usize {
        key_index(&self.names, i, self.nv.len())
    }

    #[inline]
    fn sk(&self, i: usize) -> usize {
        key_index(&self.sources, i, self.sv.len())
    }
}

/// Computes every aggregate of `plan` at `as_of_ms` for every profile in the lake at
/// `lake_dir`, in one fused scan. `progress` is called on the calling thread after each file.
pub fn aggregate(
    lake_dir: &Path,
    plan: &Plan,
    as_of_ms: i64,
    opts: &KernelOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Aggregated, BatchError> {
    let map = read_profile_map(lake_dir)?;
    let n = map.survivor.len();
    let slots = plan
        .aggregates
        .iter()
        .enumerate()
        .map(|(i, a)| compile_slot(i, a, as_of_ms, plan))
        .collect::<Result<Vec<_>, _>>()?;
    let words = slots.len().div_ceil(64).max(1);
    let mut props_mask = vec![0u64; words];
    let mut map_mask = vec![0u64; words];
    for (i, s) in slots.iter().enumerate() {
        if s.needs_props {
            bit(&mut props_mask, i);
        }
        if s.needs_map {
            bit(&mut map_mask, i);
        }
    }
    let days = window::union_days(slots.iter().filter_map(|s| s.days).collect());
    let live_windows: Vec<&SlotPlan> = slots.iter().filter(|s| s.days.is_some()).collect();
    let min_lo = live_windows.iter().map(|s| s.lo).min().unwrap_or(i64::MAX);
    let max_hi = live_windows.iter().map(|s| s.hi).max().unwrap_or(i64::MIN);
    let files = if slots.is_empty() {
        Vec::new()
    } else {
        list_files(lake_dir, &days)?
    };
    let scan = Scan {
        need_offset: slots
            .iter()
            .any(|s| matches!(s.func, AggFunc::First | AggFunc::Last)),
        slots,
        words,
        props_mask,
        map_mask,
        min_lo,
        max_hi,
        survivor: &map.survivor,
        identity: {
            let mut bits = vec![0u64; map.survivor.len().div_ceil(64)];
            for (id, s) in map.survivor.iter().enumerate() {
                if *s as usize == id {
                    bits[id >> 6] |= 1 << (id & 63);
                }
            }
            bits
        },
        as_of: as_of_ms,
        tz: plan.time_zone,
        batch_size: opts.batch_size.max(1),
    };
    let threads = opts.threads.clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let total = files.len();
    let (tx, rx) = mpsc::channel::<u64>();
    let results: Vec<Result<(Vec<State>, u64), BatchError>> = std::thread::scope(|sc| {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let tx = tx.clone();
            let (scan, files, next, abort) = (&scan, &files, &next, &abort);
            handles.push(sc.spawn(move || -> Result<(Vec<State>, u64), BatchError> {
                let mut states: Vec<State> = scan.slots.iter().map(|s| State::new(s, n)).collect();
                let mut events = 0;
                loop {
                    if abort.load(AtomicOrdering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    match scan.scan_file(f, &mut states) {
                        Ok(e) => {
                            events += e;
                            let _ = tx.send(e);
                        }
                        Err(err) => {
                            abort.store(true, AtomicOrdering::Relaxed);
                            return Err(err);
                        }
                    }
                }
                Ok((states, events))
            }));
        }
        drop(tx);
        let (mut done, mut events) = (0usize, 0u64);
        for e in rx {
            done += 1;
            events += e;
            progress(Progress {
                files_done: done,
                files_total: total,
                events,
            });
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BatchError::WorkerPanicked)))
            .collect()
    });
    let mut merged: Option<Vec<State>> = None;
    let mut events_scanned = 0;
    for r in results {
        let (states, events) = r?;
        events_scanned += events;
        match merged.as_mut() {
            None => merged = Some(states),
            Some(m) => m.iter_mut().zip(states).for_each(|(a, b)| a.merge(b)),
        }
    }
    let states = merged.unwrap_or_else(|| scan.slots.iter().map(|s| State::new(s, n)).collect());
    Ok(Aggregated {
        columns: states.into_iter().map(|s| s.finish(n)).collect(),
        live: map.live,
        id_space: n,
        events_scanned,
        files_scanned: total,
    })
}
