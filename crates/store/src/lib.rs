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

/// Nice level of background threads (snapshots): below request handling, the committer and
/// the real-time engine, so a snapshot being written does not add to their latency, yet with
/// a quarter of a busy core's share it still ends in seconds.
pub const BACKGROUND_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority to [`BACKGROUND_NICE`] (Linux: per thread;
/// lowering one's own priority needs no privilege). A refusal is ignored: the thread then
/// runs at the default priority, as before.
pub fn run_in_background() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE);
}
pub use sources::{Source, SourceKind, SourceRegistry};

#[cfg(test)]
mod tests {
    #[test]
    fn a_background_thread_runs_at_the_background_nice_level() {
        let nice = std::thread::spawn(|| {
            super::run_in_background();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice")
        })
        .join()
        .expect("thread");
        // Unless the tests themselves run at a lower priority than the background level.
        assert!(nice >= super::BACKGROUND_NICE, "nice {nice}");
    }
}
