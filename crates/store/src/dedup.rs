//! The `(source, messageId)` keys the store has accepted, kept so that a snapshot can take
//! them without copying them and without stopping the committer.
//!
//! Keys live in up to three sets: `frozen` (everything up to an earlier snapshot, read-only
//! and shared), `sealed` (the keys a snapshot being written holds besides `frozen`, read-only
//! and shared) and `recent` (the keys since). A snapshot seals `recent` and serialises
//! `frozen` ∪ `sealed` on its own thread; afterwards the two are folded into one new `frozen`
//! set off the committer too ([`DedupView::fold`], [`Dedup::install`]).

use std::sync::Arc;

use portrait_core::hash::KeySet;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

/// The accepted keys (see the module docs).
#[derive(Default)]
pub(crate) struct Dedup {
    frozen: Arc<KeySet>,
    sealed: Arc<KeySet>,
    recent: KeySet,
}

impl Dedup {
    /// A set holding `keys`.
    pub(crate) fn new(keys: KeySet) -> Self {
        Dedup {
            frozen: Arc::new(keys),
            ..Dedup::default()
        }
    }

    /// Adds `key`; false when it was there (a duplicate).
    pub(crate) fn insert(&mut self, key: u128) -> bool {
        if self.frozen.contains(&key) || self.sealed.contains(&key) {
            return false;
        }
        self.recent.insert(key)
    }

    /// Forgets a key added since the last [`Dedup::seal`] (a group that was not stored).
    pub(crate) fn forget_recent(&mut self, key: u128) {
        self.recent.remove(&key);
    }

    /// Every key so far, for a snapshot: the recent keys are sealed (shared, read-only) and
    /// later ones go to a new recent set. Call [`Dedup::install`] with the view's
    /// [`DedupView::fold`] (or [`Dedup::fold_here`]) before the next seal.
    pub(crate) fn seal(&mut self) -> DedupView {
        if !self.sealed.is_empty() {
            self.fold_here();
        }
        self.sealed = Arc::new(std::mem::take(&mut self.recent));
        DedupView {
            frozen: self.frozen.clone(),
            sealed: self.sealed.clone(),
        }
    }

    /// Replaces `frozen` ∪ `sealed` by their fold.
    pub(crate) fn install(&mut self, folded: Arc<KeySet>) {
        self.frozen = folded;
        self.sealed = Arc::default();
    }

    /// Folds `sealed` into `frozen` on the calling thread (when no view's fold arrives).
    pub(crate) fn fold_here(&mut self) {
        let view = DedupView {
            frozen: self.frozen.clone(),
            sealed: std::mem::take(&mut self.sealed),
        };
        self.frozen = Arc::default();
        self.install(view.fold());
    }

    /// Keys held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.frozen.len() + self.sealed.len() + self.recent.len()
    }
}

/// The keys a snapshot holds: serialises as one set (the format of a [`KeySet`]).
pub(crate) struct DedupView {
    frozen: Arc<KeySet>,
    sealed: Arc<KeySet>,
}

impl DedupView {
    /// The two sets as one (a copy of the frozen set unless this view holds the only
    /// reference to it).
    pub(crate) fn fold(self) -> Arc<KeySet> {
        let mut all = Arc::unwrap_or_clone(self.frozen);
        all.reserve(self.sealed.len());
        all.extend(self.sealed.iter().copied());
        Arc::new(all)
    }
}

impl Serialize for DedupView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The sets are disjoint: `Dedup::insert` adds only keys in neither.
        let mut seq = serializer.serialize_seq(Some(self.frozen.len() + self.sealed.len()))?;
        for key in self.frozen.iter().chain(self.sealed.iter()) {
            seq.serialize_element(key)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bincode_of<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serialize(v).expect("serialises")
    }

    #[test]
    fn a_view_serialises_as_the_whole_set_and_later_keys_stay_out() {
        let mut d = Dedup::new((0..100u128).collect());
        assert!(!d.insert(5), "a frozen key is a duplicate");
        for k in 100..150u128 {
            assert!(d.insert(k));
        }
        let view = d.seal();
        // Keys after the seal: not in the view, still duplicates when repeated.
        assert!(d.insert(150));
        assert!(!d.insert(120), "a sealed key is a duplicate");
        assert!(!d.insert(150));
        d.forget_recent(150);
        assert!(d.insert(150), "a forgotten recent key is accepted again");
        let bytes = bincode_of(&view);
        let back: KeySet = bincode::deserialize(&bytes).expect("reads as a KeySet");
        assert_eq!(back, (0..150u128).collect::<KeySet>());
        d.install(view.fold());
        assert_eq!(d.len(), 151);
        assert!(!d.insert(149) && !d.insert(0) && !d.insert(150));
        // A second seal without an installed fold folds on the spot.
        let first = d.seal();
        assert!(d.insert(151));
        let second = d.seal();
        drop(first);
        let back: KeySet = bincode::deserialize(&bincode_of(&second)).expect("reads");
        assert_eq!(back, (0..152u128).collect::<KeySet>());
    }
}
