//! Portrait's tag language (grammar and semantics: see the module docs as they land).

pub mod ir;
pub mod value;
