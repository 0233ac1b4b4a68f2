//! Helpers shared by the integration tests: small lakes and hand-built plans.
#![allow(dead_code, clippy::unwrap_used)] // tests may unwrap

use std::path::Path;

use portrait_batch::synth::{self, EventSpec};
use portrait_tags::ir::{AggFunc, Aggregate, CmpOp, EventField, Expr, Plan, Window};
use portrait_tags::value::{Type, Value};

pub const DAY: i64 = 86_400_000;
pub const HOUR: i64 = 3_600_000;
/// 2024-06-08T10:00:00+08:00.
pub const AS_OF: i64 = 1_717_812_000_000;

pub fn ev(
    offset: u64,
    pid: Option<u32>,
    kind: &str,
    name: Option<&str>,
    source: &str,
    ts: i64,
    props: &str,
) -> EventSpec {
    EventSpec {
        offset,
        profile_id: pid,
        kind: kind.into(),
        name: name.map(str::to_string),
        source: source.into(),
        timestamp_ms: ts,
        properties: props.into(),
    }
}

pub fn write_lake(dir: &Path, survivors: &[Option<u32>], events: &[EventSpec]) {
    synth::write_profile_map(dir, survivors).unwrap();
    synth::write_events(dir, events).unwrap();
}

pub fn s(x: &str) -> Expr {
    Expr::Lit(Value::Str(x.into()))
}

pub fn n(x: f64) -> Expr {
    Expr::Lit(Value::Num(x))
}

pub fn eq(a: Expr, b: Expr) -> Expr {
    Expr::Cmp(CmpOp::Eq, Box::new(a), Box::new(b))
}

pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
    Expr::Cmp(op, Box::new(a), Box::new(b))
}

pub fn event_is(name: &str) -> Expr {
    eq(Expr::Event(EventField::Name), s(name))
}

pub fn prop(path: &str, ty: Type) -> Expr {
    Expr::Property {
        path: path.split('.').map(str::to_string).collect(),
        ty,
    }
}

pub fn agg(func: AggFunc, arg: Option<Expr>, filter: Option<Expr>, window: Window) -> Aggregate {
    Aggregate {
        func,
        arg,
        filter,
        window,
    }
}

pub fn plan(aggregates: Vec<Aggregate>) -> Plan {
    Plan {
        aggregates,
        tags: Vec::new(),
        time_zone: chrono_tz::Asia::Shanghai,
    }
}

pub fn days(d: i64) -> Window {
    Window::Rolling { ms: d * DAY }
}
