//! Real-time tags: every event updates its profile's tags and audiences as it is stored.
//!
//! Tags with `refresh: realtime` (checked by [`portrait_tags::incremental::check`]) are
//! maintained incrementally:
//!
//! - [`state`]: per profile and per aggregate of the plan, a state an event folds into — a
//!   count, a sum, the best value with its event, a bag of values, or, for windowed
//!   aggregates, the matching events still inside (or yet to enter) the window. Reading a
//!   state at an instant gives exactly what the batch engines compute `as_of` that instant,
//!   whatever order the events arrived in.
//! - [`engine`]: [`Realtime`] applies an event (after identity resolution, merges first),
//!   re-evaluates only the tags that read a changed aggregate, trait or tag (in plan order,
//!   then the audiences), emits a [`Change`] per value that moved, and schedules the
//!   profile's next change instant — an entry entering or leaving a window, a pending future
//!   event, the next step of `days_since`/`hours_since`/`calendar_days_since` — in an index
//!   ordered by time, so time passing changes values without an event and without scanning
//!   everyone. It has no clock and no IO: `now` is an argument, which makes it testable
//!   against the reference evaluator (`tests/differential.rs`).
//! - [`changes`]: the durable change stream (append-only JSON lines segments with a cursor
//!   per change), read by `GET /api/v1/changes` and delivered to webhooks.
//! - [`service`]: the engine in the server: fed by the store's committer, persisted by
//!   snapshots, recovered after a crash by replaying the event log and folding the change
//!   stream, so no change is lost or repeated.
//!
//! Late events: an event dated more than [`Config::lateness_ms`] before the clock is stored
//! but not applied incrementally; it is counted and its profile is rebuilt from its events at
//! the next refresh. Merges combine the two states exactly; an unmerge rebuilds the parts from
//! their events.

pub mod changes;
pub mod engine;
mod input;
pub mod lag;
pub mod service;
pub mod state;
pub mod webhook;

pub use engine::{Audience, Cause, Change, Config, Counters, Event, Kind, Realtime};
