//! JSON views of stored objects, shared by the HTTP API and the CLI.

use portrait_core::time::format_iso;
use portrait_core::{MergeRecord, Profile};
use serde_json::{json, Map, Value};

use crate::sources::SourceRegistry;

/// A profile as the API shows it.
pub fn profile_json(p: &Profile, sources: &SourceRegistry) -> Value {
    let traits: Map<String, Value> = p
        .traits
        .iter()
        .map(|(k, v)| {
            let value: Value = serde_json::from_str(&v.value).unwrap_or(Value::Null);
            let shown = json!({
                "value": value,
                "source": sources.name(v.source),
                "updated_at": format_iso(v.updated_at),
            });
            (k.clone(), shown)
        })
        .collect();
    let per_source: Map<String, Value> = p
        .sources
        .iter()
        .map(|(s, n)| (sources.name(*s).to_string(), json!(n)))
        .collect();
    json!({
        "id": p.id,
        "identifiers": p.identifiers,
        "traits": traits,
        "first_seen": format_iso(p.first_seen),
        "last_seen": format_iso(p.last_seen),
        "event_count": p.events.len(),
        "sources": per_source,
        "merged_from": p.merged_from,
    })
}

/// Identity decisions as the API shows them.
pub fn merges_json(history: &[MergeRecord], sources: &SourceRegistry) -> Value {
    let items: Vec<Value> = history
        .iter()
        .map(|r| {
            json!({
                "action": r.action,
                "at": format_iso(r.at),
                "message_id": r.message_id,
                "source": r.source.map(|s| sources.name(s).to_string()),
                "identifiers": r.identifiers,
                "survivor": r.survivor,
                "others": r.others,
            })
        })
        .collect();
    Value::Array(items)
}
