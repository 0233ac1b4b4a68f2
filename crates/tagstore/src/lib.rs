//! Portrait's tag store: where computed tags live so audiences (人群圈选) are selected in
//! milliseconds.
//!
//! - [`TagStore`] holds, per tag name, a [`TagData`]: a bool tag is one Roaring bitmap, an enum
//!   tag one bitmap per value, a numeric tag a [`NumericColumn`] (sorted `(value, id)` runs for
//!   range predicates, values in id order for point reads). The universe bitmap holds the live
//!   profile ids; every tag is a subset of it, so `not x` is `universe − x`.
//! - Readers work on an immutable [`Snapshot`] (`Arc`), writers build a new tag and swap it in.
//! - [`TagStore::save`] / [`TagStore::open`]: one checksummed file per tag (see [`persist`]).
//! - [`select()`] lowers a [`portrait_tags::ir::Expr`] to bitmap algebra; [`count()`] answers
//!   sizes with cardinality-only operations where it can.
//! - [`synth`]: the deterministic sets used by the benchmarks.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
pub mod flat;
pub mod numeric;
pub mod persist;
mod select;
mod store;
pub mod synth;

pub use error::{SelectError, StoreError};
pub use numeric::{HistogramBin, NumericColumn, NumericSummary};
pub use persist::SaveStats;
pub use roaring::RoaringBitmap;
pub use select::{count, preview, sample, select};
pub use store::{
    canonical_number, Distribution, EnumTag, Snapshot, StoredValue, TagData, TagKind, TagStore,
};
