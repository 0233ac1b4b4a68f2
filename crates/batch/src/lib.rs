//! Portrait's batch tag computation.
//!
//! Given a compiled [`portrait_tags::ir::Plan`] and an `as_of` instant, a batch back end computes
//! every aggregate slot of the plan (`Plan::aggregates`) for every dense profile id, reading the
//! Parquet lake (`crates/lake/LAYOUT.md`). Two back ends give the same [`Aggregated`]:
//!
//! - [`kernel::aggregate`]: a fused, hand-written scan. One pass over the needed date partitions
//!   and columns; events are re-keyed to their surviving profile through `profile_map.parquet`
//!   by direct indexing; filters on the dictionary-encoded `type` / `event` / `source_name`
//!   columns are evaluated once per dictionary value; event properties (JSON text) are split only
//!   for rows that passed every cheap test of a slot that reads them; files are spread over
//!   worker threads that each own partial state, merged at the end.
//! - [`datafusion::aggregate_sql`]: the same plan as one wide SQL statement ([`sql::to_sql`]) on
//!   DataFusion. `to_sql` also speaks the DuckDB and ClickHouse dialects, for the benchmark peers.
//! - [`sql::tags_sql`] goes one step further: every tag of the plan (rules, stages, metrics,
//!   buckets, tag → tag references) as SQL over that aggregate query, one row per live profile;
//!   [`datafusion::tags_sql_datafusion`] runs it. The benchmark peers run it too.
//!
//! Filters and arguments without a fast path are evaluated by
//! `portrait_tags::eval::eval_event`, the reference semantics; property conversions follow
//! `portrait_tags::eval::convert_json` ([`json`]). Tests hold the kernel equal to DataFusion and
//! to the reference aggregation `portrait_tags::eval::aggregate_events`.
//!
//! Semantics (shared by both back ends):
//! - an event counts for a slot when `lo < timestamp ≤ hi` for the slot's window (see
//!   [`window::bounds`]) and its filter is true;
//! - events whose `profile_id` is null, or whose id has no survivor in `profile_map`, are skipped;
//! - the `__HIVE_DEFAULT_PARTITION__` partition (event times with no calendar date) is not read;
//! - results are indexed by the survivor id; ids that are not live keep the empty value
//!   (0 for `count`, `sum`, `count_distinct`; null otherwise).

pub mod datafusion;
pub mod error;
pub mod eval;
pub mod json;
pub mod kernel;
pub mod sql;
pub mod synth;
pub mod window;

pub use error::BatchError;
pub use kernel::{aggregate, Aggregated, KernelOptions, Progress};
pub use sql::{tags_sql, to_sql, Dialect};
