//! Portrait tag store.
