//! Test helpers: a small, strict interpreter of the generated import mappings (enough to check
//! shapes and to resolve identities with `portrait_core::ProfileBook`) — independent of the
//! real importer, so the generator's own tests do not depend on it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{Identifier, IdentityConfig, Message, MessageKind, ProfileBook};
use portrait_gen::{generate, manifest, GenOptions, GenSummary, SourceSpec};
use serde_yaml::Value;

/// Generates into a fresh temporary folder.
pub fn gen(opts: &GenOptions) -> (tempfile::TempDir, PathBuf, GenSummary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let summary = generate(&out, opts, &mut |_| {}).expect("generate");
    (dir, out, summary)
}

/// Options for a small population.
pub fn small(people: u64, seed: u64) -> GenOptions {
    GenOptions {
        people,
        seed,
        threads: 2,
        ..GenOptions::default()
    }
}

/// One mapped column: name and value type.
#[derive(Debug, Clone)]
pub struct Field {
    pub column: String,
    pub ty: String,
}

/// The parts of a mapping the tests use.
#[derive(Debug, Clone)]
pub struct MiniMapping {
    pub kind: String,
    pub event: Option<String>,
    pub event_column: Option<String>,
    pub encoding: String,
    /// (type, column, scope column)
    pub identifiers: Vec<(String, String, Option<String>)>,
    pub timestamp: Option<(String, String)>,
    pub traits: Vec<(String, Field)>,
    pub properties: Vec<(String, Field)>,
    pub message_id: Vec<String>,
}

const KEYS: &[&str] = &[
    "kind",
    "event",
    "event_column",
    "format",
    "encoding",
    "delimiter",
    "identifiers",
    "timestamp",
    "traits",
    "properties",
    "message_id",
];

fn field(v: &Value) -> Field {
    match v {
        Value::String(c) => Field {
            column: c.clone(),
            ty: "string".into(),
        },
        Value::Mapping(m) => Field {
            column: m
                .get("column")
                .and_then(Value::as_str)
                .expect("column")
                .to_string(),
            ty: m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("string")
                .to_string(),
        },
        other => panic!("bad field {other:?}"),
    }
}

fn fields(v: Option<&Value>) -> Vec<(String, Field)> {
    match v {
        None => Vec::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (k.as_str().expect("key").to_string(), field(v)))
            .collect(),
        Some(other) => panic!("bad fields {other:?}"),
    }
}

/// Parses a mapping, checking it against docs/import-mapping.md.
pub fn load_mapping(path: &Path) -> MiniMapping {
    let text = std::fs::read_to_string(path).expect("mapping");
    let v: Value = serde_yaml::from_str(&text).expect("mapping is YAML");
    let m = v.as_mapping().expect("mapping is an object");
    for k in m.keys() {
        let k = k.as_str().expect("string key");
        assert!(KEYS.contains(&k), "{}: unknown key {k}", path.display());
    }
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let kind = s("kind").expect("kind");
    assert!(kind == "track" || kind == "identify");
    let (event, event_column) = (s("event"), s("event_column"));
    if kind == "track" {
        assert!(
            event.is_some() ^ event_column.is_some(),
            "track needs exactly one of event/event_column"
        );
    }
    assert_eq!(s("format").as_deref(), Some("csv"));
    let encoding = s("encoding").unwrap_or_else(|| "auto".into());
    assert!(["utf-8", "gbk", "auto"].contains(&encoding.as_str()));
    if let Some(d) = s("delimiter") {
        assert_eq!(d.chars().count(), 1);
    }
    let config = IdentityConfig::default();
    let mut identifiers = Vec::new();
    for (k, v) in m
        .get("identifiers")
        .and_then(Value::as_mapping)
        .expect("identifiers")
    {
        let ty = k.as_str().expect("type").to_string();
        assert!(
            config.rank(&ty).is_some(),
            "identifier type {ty} is not in IdentityConfig::default()"
        );
        let (column, scope) = match v {
            Value::String(c) => (c.clone(), None),
            Value::Mapping(m) => (
                m.get("column")
                    .and_then(Value::as_str)
                    .expect("column")
                    .to_string(),
                m.get("scope_column")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
            other => panic!("bad identifier {other:?}"),
        };
        identifiers.push((ty, column, scope));
    }
    let timestamp = m.get("timestamp").map(|t| {
        let t = t.as_mapping().expect("timestamp object");
        assert_eq!(
            t.get("timezone").and_then(Value::as_str),
            Some("Asia/Shanghai")
        );
        (
            t.get("column")
                .and_then(Value::as_str)
                .expect("column")
                .to_string(),
            t.get("format")
                .and_then(Value::as_str)
                .expect("format")
                .to_string(),
        )
    });
    let message_id = match m.get("message_id") {
        None => Vec::new(),
        Some(Value::String(c)) => vec![c.clone()],
        Some(Value::Sequence(cs)) => cs
            .iter()
            .map(|c| c.as_str().expect("column").to_string())
            .collect(),
        Some(other) => panic!("bad message_id {other:?}"),
    };
    MiniMapping {
        kind,
        event,
        event_column,
        encoding,
        identifiers,
        timestamp,
        traits: fields(m.get("traits")),
        properties: fields(m.get("properties")),
        message_id,
    }
}

/// Reads a CSV file as (line, column → value) rows.
pub fn csv_rows(path: &Path, gbk: bool) -> Vec<(u64, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).expect("read");
    let text = if gbk {
        let (text, _, errors) = encoding_rs::GBK.decode(&bytes);
        assert!(!errors, "{} is not valid GBK", path.display());
        assert!(
            std::str::from_utf8(&bytes).is_err() || bytes.is_ascii(),
            "GBK file is UTF-8"
        );
        text.into_owned()
    } else {
        String::from_utf8(bytes).expect("UTF-8")
    };
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec.expect("CSV row");
            assert_eq!(rec.len(), header.len(), "{}: row width", path.display());
            let line = rec.position().map_or(0, |p| p.line());
            (
                line,
                header
                    .iter()
                    .cloned()
                    .zip(rec.iter().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

/// A row turned into a message (identifiers, timestamp, event), as the importer would.
pub fn row_message(
    m: &MiniMapping,
    row: &BTreeMap<String, String>,
    config: &IdentityConfig,
    source: u32,
) -> Result<Message, String> {
    let mut ids = Vec::new();
    for (ty, col, scope) in &m.identifiers {
        let raw = row.get(col).ok_or(format!("no column {col}"))?;
        if raw.is_empty() {
            continue;
        }
        let scope = scope
            .as_ref()
            .map(|c| row.get(c).cloned().unwrap_or_default());
        if let Ok(id) = config.identifier(ty, raw, scope.as_deref()) {
            ids.push(id);
        }
    }
    config.sort(&mut ids);
    if ids.is_empty() {
        return Err("no usable identifier".into());
    }
    let timestamp = match &m.timestamp {
        Some((col, fmt)) => {
            let text = row.get(col).ok_or(format!("no column {col}"))?;
            let t = chrono::NaiveDateTime::parse_from_str(text, fmt)
                .map_err(|e| format!("{text}: {e}"))?;
            t.and_utc().timestamp_millis() - 8 * 3_600_000
        }
        None => 0,
    };
    let check = |f: &Field| -> Result<(), String> {
        let v = row
            .get(&f.column)
            .ok_or(format!("no column {}", f.column))?;
        if v.is_empty() {
            return Ok(());
        }
        let ok = match f.ty.as_str() {
            "string" => true,
            "integer" => v.parse::<i64>().is_ok(),
            "decimal" => v.parse::<f64>().is_ok(),
            "boolean" => ["true", "false", "1", "0", "是", "否", "yes", "no"].contains(&v.as_str()),
            "json" => serde_json::from_str::<serde_json::Value>(v).is_ok(),
            other => return Err(format!("unknown type {other}")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{}: `{v}` is not {}", f.column, f.ty))
        }
    };
    for (_, f) in m.traits.iter().chain(&m.properties) {
        check(f)?;
    }
    let event = match (&m.event, &m.event_column) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(c)) => Some(
            row.get(c)
                .cloned()
                .filter(|e| !e.is_empty())
                .ok_or("no event")?,
        ),
        _ => None,
    };
    let mut mid = Vec::new();
    for c in &m.message_id {
        mid.push(row.get(c).cloned().ok_or(format!("no column {c}"))?);
    }
    Ok(Message {
        kind: if m.kind == "track" {
            MessageKind::Track
        } else {
            MessageKind::Identify
        },
        message_id: format!("import:{}", mid.join(":")),
        source,
        event,
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp,
        received_at: timestamp,
        sent_at: None,
        original_timestamp: None,
        traits: "{}".into(),
        properties: "{}".into(),
        context: "{}".into(),
        identifiers: ids,
    })
}

/// Every message of a generated data set, source by source, in file order.
pub fn messages(out: &Path, config: &IdentityConfig, mut f: impl FnMut(&SourceSpec, Message)) {
    for (s, spec) in manifest(out).expect("manifest").iter().enumerate() {
        match &spec.mapping {
            Some(mapping) => {
                let m = load_mapping(mapping);
                for file in &spec.files {
                    for (line, row) in csv_rows(file, m.encoding == "gbk") {
                        let msg = row_message(&m, &row, config, s as u32)
                            .unwrap_or_else(|e| panic!("{}:{line}: {e}", file.display()));
                        f(spec, msg);
                    }
                }
            }
            None => {
                for file in &spec.files {
                    let text = std::fs::read_to_string(file).expect("read");
                    for (i, line) in text.lines().enumerate() {
                        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                        let env = Envelope {
                            source: s as u32,
                            received_at: 0,
                            ..Envelope::default()
                        };
                        let parsed = parse_message(&v, &env, config)
                            .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), i + 1));
                        f(spec, parsed.message);
                    }
                }
            }
        }
    }
}

/// Resolves every message of a data set with core's identity resolution.
pub fn resolve(out: &Path, config: &IdentityConfig) -> (ProfileBook, u64) {
    let mut book = ProfileBook::new(config.clone());
    let mut n = 0u64;
    messages(out, config, |_, msg| {
        book.apply(&msg, n);
        n += 1;
    });
    (book, n)
}

/// The lookup a scorer needs, from a resolved book.
pub fn lookup(book: &ProfileBook) -> impl Fn(&Identifier) -> Option<u32> + '_ {
    |id| book.by_identifier(id).and_then(|p| book.resolve(p))
}

/// Counts of values per key, for distribution checks.
pub fn histogram<'a>(values: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut h = HashMap::new();
    for v in values {
        *h.entry(v.to_string()).or_default() += 1;
    }
    h
}
