//! Portrait's tag service: the catalog, compute runs, the tag store and audiences tied together.

pub mod catalog;
pub mod error;
pub mod explain;
pub mod profiles;
pub mod retention;
pub mod schedule;
pub mod service;

pub use error::TaggingError;
