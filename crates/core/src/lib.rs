//! Portrait's core: the event model, Segment message parsing, identifier normalisation and
//! identity resolution (OneID). This crate performs no IO; storage and transport live in other
//! crates and feed it values.
//!
//! The pipeline inside this crate:
//! 1. [`segment::parse_message_text`] turns one Segment JSON message into a validated
//!    [`Message`] (reading only the fields it needs, see [`json`]), extracting and normalising
//!    its identifiers through an [`IdentityConfig`].
//! 2. [`ProfileBook::apply`] resolves the message's identifiers to one profile (creating or
//!    merging profiles under per-type limits) and folds the message into that profile.
//!    [`ProfileBook::apply_batch`] does the same for a run of messages (a group commit, a
//!    replay), with the same result, overlapping the index lookups of neighbouring messages.

pub mod consent;
pub mod hash;
pub mod identity;
pub mod json;
pub mod message;
pub mod profile;
pub mod segment;
pub mod time;

pub use identity::{IdentifierType, IdentityConfig, IdentityError, Normalizer};
pub use message::{Identifier, Message, MessageKind, SourceId};
pub use profile::{
    ApplyOutcome, BookCapture, Erased, EventRef, MergeRecord, Profile, ProfileBook, ProfileId,
    TraitValue,
};
