//! Portrait's tag history (标签演化轨迹): how profiles moved between tag values over time.
//!
//! - **Snapshots** ([`History::record`], [`History::backfill`]): per tag and date
//!   (`YYYY-MM-DD`, Asia/Shanghai; the values as of the end of that date), the tag's bitmaps —
//!   one per value for bool and enum tags, ids plus values for numeric tags — and the date's
//!   universe (live ids), under `DIR/tags/history/`. A bitmap equal to the previous
//!   snapshot's is stored as a reference to the file holding it; a bitmap close to the
//!   chain's base is stored as a XOR delta against it (see [`format`](crate) docs in
//!   `format.rs`). Files are written atomically (temp, fsync, rename); a damaged file is a
//!   [`HistoryError::Corrupt`] naming it.
//! - **Retention** ([`History::prune`], default [`DEFAULT_RETENTION_DAYS`]): dates on or
//!   before `today − retention` are removed; kept snapshots that referenced them are
//!   rewritten first.
//! - **Queries**: [`History::transitions`] (the from × to matrix, Sankey data),
//!   [`History::change`] (entered / exited / stayed), [`History::population`] (counts per value
//!   per date, from the index alone), [`History::paths`] (most common value sequences) and
//!   [`History::trail`] (one profile's changes).
//!
//! Values: bool tags are `true`/`false`; enum tags (stages, buckets, labels) their labels;
//! [`NONE`] (`(none)`) is a profile without a value or not live at that date. Numeric tags are
//! stored (ids + values) and answer population, change and trail, not transitions or paths.
//!
//! Causes in trails are `initial` and `refresh` only: the real-time change stream that would
//! name the event or merge behind a change does not exist yet, so a trail has the resolution
//! of the snapshots (one value per tag per date).
//!
//! CLI: `portrait history backfill|record|transitions|change|population|paths|trail|prune|list`
//! (`crates/cli/src/history.rs`); HTTP: `/api/v1/history/{tag}/transitions|change|population|paths`
//! and `/api/v1/profiles/{id}/history` (`crates/server/src/history.rs`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backfill;
pub mod date;
mod error;
mod format;
mod query;
mod store;

pub use backfill::{BackfillProgress, BackfillReport};
pub use date::{
    dates, day_of, end_of_day, format_day, parse_date_or_instant, parse_day, Day, Every,
};
pub use error::HistoryError;
pub use portrait_tagstore::RoaringBitmap;
pub use query::{
    transition_matrix, Change, PathCount, PopulationPoint, TrailEntry, Transition, NONE,
};
pub use store::{
    history_dir, DayEntry, History, PruneReport, RecordReport, StorageStats, TagAt,
    DEFAULT_RETENTION_DAYS,
};

/// Records the tag store's current values as the snapshot of the date of `as_of` (called after
/// every computation: the CLI, the API, `serve`'s scheduled refresh and the demo).
pub fn record_computation(
    tagging: &portrait_tagging::service::Tagging,
    as_of: i64,
) -> Result<RecordReport, HistoryError> {
    History::for_data_dir(tagging.engine().dir())?.record(&tagging.snapshot(), day_of(as_of))
}
