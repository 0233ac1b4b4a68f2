//! Portrait's durable storage and the engine that owns the profile state.
//!
//! - [`wal`]: the segmented, checksummed append-only event log. It is both the write-ahead log
//!   (a message is acknowledged only after its record is fsynced) and the permanent event
//!   store that timelines and unmerges read back.
//! - [`sources`]: the registry of sources and their write keys.
//! - [`retention`]: retention periods per event, source or type (`DIR/retention.yaml`).
//! - [`engine`]: one committer thread that deduplicates, logs (group commit), and applies
//!   messages to the in-memory [`portrait_core::ProfileBook`]; snapshots bound restart time.
//!   Its dedup keys (module `dedup`) are split so that a snapshot shares them instead of
//!   copying them.

pub mod crypto;
mod dedup;
pub mod engine;
pub mod error;
pub mod record;
pub mod retention;
pub mod sources;
pub mod views;
pub mod wal;

pub use engine::{
    Applied, Engine, EngineOptions, ErasureReport, IngestReport, Observer, State, Stats,
};
pub use error::StoreError;
pub use sources::{Source, SourceKind, SourceRegistry};
