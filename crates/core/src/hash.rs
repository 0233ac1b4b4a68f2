//! Hashing for keys that are already hashes.
//!
//! Identifier and dedup keys are 128-bit xxh3 digests; hashing them again (SipHash) is wasted
//! work. [`KeyHasher`] folds the digest into 64 bits.

use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for `u128` digests: XOR-folds them to 64 bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; a simple FNV-1a keeps other key types correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// Build-hasher for maps keyed by digests.
pub type KeyBuild = BuildHasherDefault<KeyHasher>;

/// A hash map keyed by 128-bit digests.
pub type KeyMap<V> = std::collections::HashMap<u128, V, KeyBuild>;

/// A hash set of 128-bit digests.
pub type KeySet = std::collections::HashSet<u128, KeyBuild>;
