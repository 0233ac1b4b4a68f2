//! Portrait batch tag computation.
