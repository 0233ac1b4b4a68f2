//! Reading an event's inputs cheaply: only the properties the plan reads, and strings hashed
//! with a seeded xxh3 instead of SipHash.
//!
//! Both run once or more per event on the worker; a full `serde_json::Value` parse of every
//! property and SipHash for every name and interned string were a tenth of its time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use crate::engine::JsonMap;

/// A hasher for strings: xxh3 of each written piece, seeded with the state so far.
#[derive(Debug, Clone, Copy)]
pub struct StrHasher(u64);

impl Hasher for StrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
}

/// Builds [`StrHasher`]s with a seed drawn once per table, so that crafted strings cannot be
/// made to collide.
#[derive(Debug, Clone, Copy)]
pub struct StrBuild(u64);

impl Default for StrBuild {
    fn default() -> Self {
        StrBuild(std::hash::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for StrBuild {
    type Hasher = StrHasher;

    fn build_hasher(&self) -> StrHasher {
        StrHasher(self.0)
    }
}

/// A hash set of strings with [`StrBuild`].
pub type StrSet<T> = HashSet<T, StrBuild>;

/// A hash map keyed by strings with [`StrBuild`].
pub type StrMap<K, V> = HashMap<K, V, StrBuild>;

/// The top-level properties in `keys`, parsed out of an event's properties (JSON text); the
/// others are skipped without being built. Text that is not a JSON object gives an empty map,
/// as a full parse would; a key given twice keeps its last value.
pub fn properties(text: &str, keys: &[String]) -> JsonMap {
    let mut out = JsonMap::new();
    if let Ok(Some(values)) = portrait_core::json::pick(text, keys) {
        for (key, raw) in keys.iter().zip(values) {
            if let Some(v) = raw.and_then(|raw| serde_json::from_str(raw.get()).ok()) {
                out.insert(key.clone(), v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> JsonMap {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => JsonMap::new(),
        }
    }

    #[test]
    fn wanted_properties_equal_a_full_parse_restricted_to_them() {
        let keys = vec![
            "revenue".to_string(),
            "类目".to_string(),
            "tags".to_string(),
        ];
        for text in [
            r#"{"sku":"A-1","revenue":199.5,"类目":"护肤","extra":{"a":[1,2,{"b":null}]}}"#,
            r#"{"revenue":1,"revenue":2}"#,
            r#"{"\u7c7b\u76ee":"esc","tags":["a","b"],"n":-1e3}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#""revenue""#,
            r#"{"revenue":1"#,
            r#"{"revenue":1} trailing"#,
            "",
            r#"{"sku":"only others"}"#,
        ] {
            let mut want = full(text);
            want.retain(|k, _| keys.contains(k));
            let got = properties(text, &keys);
            assert_eq!(got, want, "{text}");
            let order: Vec<&String> = got.keys().collect();
            let want_order: Vec<&String> = want.keys().collect();
            assert_eq!(order, want_order, "{text}");
        }
    }

    #[test]
    fn seeded_hashes_differ_between_tables_and_agree_within_one() {
        let (a, b) = (StrBuild::default(), StrBuild::default());
        assert_eq!(a.hash_one("护肤"), a.hash_one("护肤"));
        assert_ne!(a.hash_one("护肤"), a.hash_one("彩妆"));
        assert_ne!(a.hash_one("护肤"), b.hash_one("护肤"));
        let mut set: StrSet<String> = StrSet::default();
        set.insert("护肤".into());
        assert!(set.contains("护肤"));
    }
}
