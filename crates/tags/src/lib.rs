//! Portrait's tag language: YAML definitions ([`def`]), the expression DSL ([`syntax`]), the
//! type checker and compiler to the typed plan ([`compile`], [`ir`]), the evaluators
//! ([`eval`]: scalar, population, reference) and data-driven test cases ([`casefile`]).
//!
//! ```text
//! YAML ──parse_defs──► TagDef ──compile──► Plan { aggregates (deduplicated), tags (topological) }
//!                                              │
//!                       reference / batch / realtime engines evaluate the same plan
//! ```
//!
//! # Definitions
//!
//! ```yaml
//! name: high_intent                 # [a-z][a-z0-9_]*
//! title: 高意向用户
//! owner: growth
//! refresh: realtime                 # realtime | hourly | daily (default) | cron "0 3 * * *"
//! rule: >
//!   count(event = "Product Viewed", within 7d) >= 5
//!   and (count(event = "Product Favorited", within 7d) >= 1
//!        or count(event = "Product Added", within 7d) >= 2)
//! ---
//! name: spend_90d
//! kind: metric
//! value: sum(properties.revenue, event = "Order Completed", within 90d)
//! ---
//! name: lifecycle
//! kind: stage                       # the label of the first true case; null when none is
//! cases:
//!   - churned:  days_since(last(event = "Order Completed")) > 180
//!   - active:   count(event = "Order Completed", within 30d) >= 1
//!   - prospect: true
//! ---
//! name: rfm_r
//! kind: buckets                     # 1..=n; quantiles: n  or  thresholds: [7, 30, 90]
//! of: days_since(last(event = "Order Completed"))
//! quantiles: 5
//! reverse: true
//! ---
//! name: credit_level
//! kind: external                    # loaded from outside; value_type: string | number | bool | time
//! value_type: string
//! key: member_id
//! ```
//!
//! # Expression grammar
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | cmp
//! cmp     := add ( ("="|"!="|"<"|"<="|">"|">=") add
//!                | ["not"] "in" "(" literal ("," literal)* ")"
//!                | ["not"] "between" add "and" add
//!                | "is" ["not"] "null" )?
//! add     := mul (("+"|"-") mul)*
//! mul     := unary (("*"|"/"|"%") unary)*
//! unary   := "-" unary | primary
//! primary := NUMBER | STRING | "true" | "false" | "null" | call | path | "(" expr ")"
//! path    := IDENT ("." IDENT)*
//! call    := IDENT "(" [arg ("," arg)*] ")"
//! arg     := expr | "within" DURATION ["calendar" ["days"]] | "within" NUMBER "calendar" ["days"]
//!          | "between" DURATION "and" DURATION "ago"
//! DURATION:= NUMBER UNIT   (UNIT: m minutes, h hours, d days, w weeks; whole numbers: 7d, 24h, 30m, 2w)
//! STRING  := "…" | '…'     (escapes \" \' \\ \n \t; any Unicode text)
//! IDENT   := letter (letter | digit | "_")*  |  `any text but a backtick`
//! ```
//!
//! Keywords are case-insensitive (`AND`, `and`). Nesting deeper than
//! [`syntax::MAX_DEPTH`] levels is an error.
//!
//! **Names.** Inside an aggregate (event scope): `event` (the event name), `type` (identify,
//! track, page, screen, group, alias), `source`, `timestamp`, `properties.PATH`. Outside
//! (profile scope): aggregates, `traits.PATH`, `tag.NAME` (another tag; a bare tag name is an
//! error in definitions), `first_seen`, `last_seen`. Both: literals, `now()`, scalar
//! functions. In audience expressions ([`compile::compile_audience`]) a bare name is a tag,
//! and aggregates are not allowed.
//!
//! **Aggregates** (profile scope, never nested, never inside a filter; the window goes last):
//! `count([filter][, window])`; `sum|avg|min|max|count_distinct|most_frequent(value[, filter][, window])`;
//! `first|last(value[, filter][, window])` — the value of the earliest/latest matching event;
//! `first|last([filter][, window])` with a boolean (or no) first argument — the *time* of the
//! earliest/latest matching event, so `days_since(last(event = "Order Completed"))` works.
//!
//! **Windows.** `within 7d` is rolling: `as_of − 7d < ts ≤ as_of`. `within 7 calendar days`
//! (or `within 1w calendar`) holds events whose local date in the workspace time zone (default
//! Asia/Shanghai) is one of the 7 dates ending with `as_of`'s local date ("近7天" = today and
//! the 6 days before). `between 60d and 30d ago` is `as_of − 60d < ts ≤ as_of − 30d` (the far
//! end first, else an error). Without a window: all events up to `as_of`.
//!
//! **Scalar functions.** `days_since(t)` = `floor((as_of − t) / 24h)`, `hours_since(t)`,
//! `calendar_days_since(t)` (local dates), `now()`, `coalesce(a, …)`, `lower`, `upper`,
//! `length` (characters), `contains`, `starts_with`, `ends_with`, `concat(a, …)` (nulls
//! skipped), `abs`, `round(x[, digits])` (half away from zero), `floor`, `ceil`,
//! `least(a, …)`, `greatest(a, …)` (nulls ignored).
//!
//! # Types
//!
//! Bool, Number (f64), Str, Time (ms instant). Traits and properties are JSON and take their
//! type from the context: compared with a string → Str, with a number or in arithmetic,
//! `sum`, `avg` → Number, in a boolean position (`and`, `or`, `not`, a filter, a rule) →
//! Bool, compared with an instant or in `days_since` → Time; otherwise Str. `min`, `max`,
//! `first`, `last`, `most_frequent` pass the context's type to their value. A string literal
//! compared with an instant is read as RFC 3339, or `YYYY-MM-DD` = local midnight. Rules and
//! stage cases must be Bool, buckets' `of` Number, metrics anything but Bool.
//!
//! # Semantics
//!
//! - `as_of` is an instant (ms). Events after `as_of` do not exist for the computation.
//! - Over no matching events `count`, `sum` and `count_distinct` are 0; `avg`, `min`, `max`,
//!   `first`, `last`, `most_frequent` are null. Aggregates except `count` and the time forms of
//!   `first`/`last` skip events whose value is null.
//! - A comparison (also `in`, `between`) with null is false; `and`, `or`, `not` are two-valued
//!   (null counts as false), so a rule on missing data is false and a stage falls through to
//!   the next case; `is null` and `coalesce` handle missing data explicitly. A rule's value is
//!   never null.
//! - Arithmetic with null is null; division (and `%`) by zero is null.
//! - JSON conversion: to Number — a number, or a string that parses as a decimal; to Str — a
//!   string, a number (integers without `.0`), a boolean as `"true"`/`"false"`; to Bool — a
//!   boolean or the strings `"true"`/`"false"`; to Time — an RFC 3339 string or a number of
//!   ms. Anything else is null. Paths descend into nested objects (`traits.address.city`).
//! - `min`/`max` of strings compare code points. `first`/`last` order events by (timestamp,
//!   log offset). `most_frequent` breaks ties by the least value.
//! - Buckets: see [`ir::BucketScheme`]; quantile cut points are computed over the non-null
//!   values of the whole population being computed.
//!
//! # Diagnostics
//!
//! Errors and warnings are [`diag::Diagnostic`]s: `FILE:LINE:COL: error: message; hint` on one
//! line, or [`diag::Diagnostic::render`] with the source line and a caret underline. Unknown
//! event, trait and source names (compared with [`compile::Known`]) are warnings with the
//! closest known name.

pub mod casefile;
pub mod compile;
pub mod def;
pub mod diag;
pub mod display;
pub mod eval;
pub mod incremental;
pub mod ir;
pub mod syntax;
pub mod value;

pub use compile::{compile, compile_audience, Compiled, Known};
pub use def::{parse_defs, to_yaml, Refresh, TagDef, TagKindDef};
pub use diag::{Diagnostic, Severity};
