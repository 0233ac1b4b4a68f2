//! The import mapping: how the rows of a file become messages (`docs/import-mapping.md`).
//!
//! A [`Mapping`] is read from YAML. Field docs here are the user docs of the YAML keys.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use chrono::format::{Item, StrftimeItems};
use chrono_tz::Tz;
use portrait_core::{IdentityConfig, MessageKind};
use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::ImportError;

/// How a file's rows become messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The message kind every row becomes: `track` or `identify`.
    pub kind: ImportKind,
    /// `track`: a literal event name for every row. Exactly one of `event` and
    /// `event_column` is required for `track`.
    #[serde(default)]
    pub event: Option<String>,
    /// `track`: the column holding each row's event name.
    #[serde(default)]
    pub event_column: Option<String>,
    /// Input format; by default told from the file extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// CSV only: text encoding of the file (`auto` by default).
    #[serde(default)]
    pub encoding: Encoding,
    /// CSV only: field delimiter, one ASCII character (`,` by default).
    #[serde(default, deserialize_with = "delimiter")]
    pub delimiter: Option<char>,
    /// Identifier type → column. At least one is required; a row with no usable identifier is
    /// rejected.
    #[serde(deserialize_with = "ordered")]
    pub identifiers: Vec<(String, IdentifierColumn)>,
    /// Where the event time comes from; without it the import time is used.
    #[serde(default, deserialize_with = "optional_short")]
    pub timestamp: Option<TimestampColumn>,
    /// Trait name → column, in output order.
    #[serde(default, deserialize_with = "ordered")]
    pub traits: Vec<(String, FieldColumn)>,
    /// `track`: property name → column, in output order.
    #[serde(default, deserialize_with = "ordered")]
    pub properties: Vec<(String, FieldColumn)>,
    /// Column(s) whose values, joined with `:`, make the message id `import:<value>` (the
    /// deduplication key). Without it the id is a hash of the row's mapped content.
    #[serde(default, deserialize_with = "one_or_many")]
    pub message_id: Vec<String>,
}

/// The message kinds an import can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportKind {
    /// Rows are events (`track`).
    Track,
    /// Rows are trait updates (`identify`).
    Identify,
}

impl ImportKind {
    /// The core message kind.
    pub fn message_kind(self) -> MessageKind {
        match self {
            Self::Track => MessageKind::Track,
            Self::Identify => MessageKind::Identify,
        }
    }
}

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Format {
    /// Comma-separated values with a header row, UTF-8 or GBK.
    #[serde(rename = "csv")]
    Csv,
    /// One JSON object per line.
    #[serde(rename = "jsonl", alias = "ndjson", alias = "json")]
    JsonLines,
    /// Apache Parquet.
    #[serde(rename = "parquet")]
    Parquet,
}

impl Format {
    /// The format a file name's extension implies: `.csv`, `.jsonl`/`.ndjson`/`.json`,
    /// `.parquet` (case-insensitive). `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => Self::Csv,
            "jsonl" | "ndjson" | "json" => Self::JsonLines,
            "parquet" => Self::Parquet,
            _ => return None,
        })
    }

    /// The mapping name of the format (`csv`, `jsonl`, `parquet`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::JsonLines => "jsonl",
            Self::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text encoding of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    /// UTF-8 when the whole file is valid UTF-8, otherwise GBK.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// UTF-8 (a leading byte-order mark is skipped).
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    /// GBK (decoded as GB18030, its superset), as written by Excel on Chinese Windows.
    #[serde(rename = "gbk", alias = "GBK", alias = "gb18030", alias = "gb2312")]
    Gbk,
}

/// Where one identifier type is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierColumn {
    /// The column holding the value.
    pub column: String,
    /// A literal scope for scoped types (`wechat_openid`): stored as `scope:value`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The column holding the scope (the WeChat app id).
    #[serde(default)]
    pub scope_column: Option<String>,
}

/// Where the event time is read from and how it is written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampColumn {
    /// The column holding the time.
    pub column: String,
    /// `iso` (default: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` or `YYYY-MM-DD`), `epoch_s`,
    /// `epoch_ms`, or a chrono `strftime` pattern such as `%Y/%m/%d %H:%M`.
    #[serde(default)]
    pub format: TimestampFormat,
    /// IANA time zone for times written without an offset (default `Asia/Shanghai`).
    #[serde(default = "shanghai", deserialize_with = "timezone")]
    pub timezone: Tz,
}

/// How a timestamp cell is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    /// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` / `YYYY-MM-DD` in the mapping's time zone.
    #[default]
    Iso,
    /// Seconds since the Unix epoch (fractions allowed).
    EpochS,
    /// Milliseconds since the Unix epoch.
    EpochMs,
    /// A chrono `strftime` pattern; without `%z` the mapping's time zone applies.
    Pattern(String),
}

/// One trait or property: the column and the type its value is converted to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldColumn {
    /// The column holding the value.
    pub column: String,
    /// The value type (`string` by default).
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
}

/// Types a trait or property value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Text, as is.
    #[default]
    String,
    /// A whole number (64-bit).
    Integer,
    /// A number with a fraction (stored as a JSON number).
    Decimal,
    /// `true/false/1/0/是/否/yes/no`.
    Boolean,
    /// The cell holds JSON text (or, in JSON lines and Parquet, any nested value).
    Json,
}

impl ValueType {
    /// The mapping name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Boolean => "boolean",
            Self::Json => "json",
        }
    }
}

impl Mapping {
    /// Parses and checks a mapping: YAML shape and names (with line and column), event vs
    /// `event_column`, time zone, timestamp pattern, delimiter, CSV-only keys.
    ///
    /// Identifier type names are checked against an identity configuration by
    /// [`Mapping::validate`].
    pub fn from_yaml(text: &str) -> Result<Mapping, ImportError> {
        let mapping: Mapping =
            serde_yaml::from_str(text).map_err(|e| ImportError::mapping(e.to_string()))?;
        mapping.check()?;
        Ok(mapping)
    }

    /// Reads and parses a mapping file.
    pub fn load(path: &Path) -> Result<Mapping, ImportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::io("read", path, e))?;
        Self::from_yaml(&text).map_err(|e| match e {
            ImportError::Mapping { message, .. } => ImportError::Mapping {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Checks the mapping against an identity configuration: every identifier type it names must
    /// be defined there.
    pub fn validate(&self, config: &IdentityConfig) -> Result<(), ImportError> {
        self.check()?;
        for (kind, _) in &self.identifiers {
            if config.rank(kind).is_none() {
                return Err(ImportError::UnknownIdentifierType {
                    kind: kind.clone(),
                    known: config.types.iter().map(|t| t.name.clone()).collect(),
                });
            }
        }
        Ok(())
    }

    /// Consistency rules that the YAML shape alone does not express.
    pub(crate) fn check(&self) -> Result<(), ImportError> {
        let fail = |m: String| Err(ImportError::mapping(m));
        let event_literal = self.event.as_deref().map(str::trim);
        match (self.kind, event_literal, &self.event_column) {
            (ImportKind::Track, Some(_), Some(_)) => {
                return fail("kind `track`: set either `event` or `event_column`, not both".into())
            }
            (ImportKind::Track, None, None) => {
                return fail(
                    "kind `track` needs `event` (a literal event name) or `event_column` \
                     (the column holding it)"
                        .into(),
                )
            }
            (ImportKind::Track, Some(""), _) => return fail("`event` is empty".into()),
            (ImportKind::Identify, Some(_), _) | (ImportKind::Identify, _, Some(_)) => {
                return fail(
                    "`event`/`event_column` apply only to kind `track`, not `identify`".into(),
                )
            }
            _ => {}
        }
        if self.kind == ImportKind::Identify && !self.properties.is_empty() {
            return fail(
                "`properties` apply only to kind `track`; use `traits` for `identify`".into(),
            );
        }
        if self.identifiers.is_empty() {
            return fail(
                "`identifiers` is empty: map at least one identifier type to a column".into(),
            );
        }
        let non_csv = self.format.filter(|f| *f != Format::Csv);
        if let Some(format) = non_csv {
            if self.encoding != Encoding::Auto {
                return fail(format!("`encoding` applies only to csv, not {format}"));
            }
            if self.delimiter.is_some() {
                return fail(format!("`delimiter` applies only to csv, not {format}"));
            }
        }
        let mut columns: Vec<(String, &str)> = Vec::new();
        if let Some(c) = &self.event_column {
            columns.push(("event_column".into(), c));
        }
        for (kind, id) in &self.identifiers {
            if id.scope.is_some() && id.scope_column.is_some() {
                return fail(format!(
                    "identifiers.{kind}: set either `scope` or `scope_column`, not both"
                ));
            }
            columns.push((format!("identifiers.{kind}"), &id.column));
            if let Some(c) = &id.scope_column {
                columns.push((format!("identifiers.{kind}.scope_column"), c));
            }
        }
        if let Some(ts) = &self.timestamp {
            columns.push(("timestamp".into(), &ts.column));
        }
        for (section, fields) in [("traits", &self.traits), ("properties", &self.properties)] {
            for (name, field) in fields {
                if name.trim().is_empty() {
                    return fail(format!("{section}: a field name is empty"));
                }
                columns.push((format!("{section}.{name}"), &field.column));
            }
        }
        for (i, c) in self.message_id.iter().enumerate() {
            columns.push((format!("message_id[{i}]"), c));
        }
        if let Some((at, _)) = columns.iter().find(|(_, c)| c.trim().is_empty()) {
            return fail(format!("{at}: the column name is empty"));
        }
        Ok(())
    }
}

fn shanghai() -> Tz {
    chrono_tz::Asia::Shanghai
}

fn timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.trim().parse::<Tz>().map_err(|_| {
        de::Error::custom(format!(
            "unknown timezone `{name}`; use an IANA name such as Asia/Shanghai or UTC"
        ))
    })
}

fn delimiter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<char>, D::Error> {
    let text = String::deserialize(d)?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() && c != '"' && c != '\n' && c != '\r' => Ok(Some(c)),
        _ => Err(de::Error::custom(format!(
            "delimiter must be one ASCII character other than a quote or newline, got `{text}`"
        ))),
    }
}

impl<'de> Deserialize<'de> for TimestampFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "iso" => Self::Iso,
            "epoch_s" => Self::EpochS,
            "epoch_ms" => Self::EpochMs,
            pattern => {
                let broken = StrftimeItems::new(pattern).any(|item| item == Item::Error);
                if broken || !pattern.contains('%') {
                    return Err(de::Error::custom(format!(
                        "format `{pattern}` is neither `iso`, `epoch_s`, `epoch_ms` \
                         nor a valid strftime pattern such as `%Y-%m-%d %H:%M:%S`"
                    )));
                }
                Self::Pattern(pattern.to_string())
            }
        })
    }
}

/// Types that may be written as a bare column name instead of a `{column, …}` map.
trait FromColumn {
    fn from_column(column: String) -> Self;
    const EXPECTING: &'static str;
}

impl FromColumn for IdentifierColumn {
    fn from_column(column: String) -> Self {
        Self {
            column,
            scope: None,
            scope_column: None,
        }
    }
    const EXPECTING: &'static str = "a column name or {column, scope | scope_column}";
}

impl FromColumn for FieldColumn {
    fn from_column(column: String) -> Self {
        Self {
            column,
            value_type: ValueType::String,
        }
    }
    const EXPECTING: &'static str = "a column name or {column, type}";
}

impl FromColumn for TimestampColumn {
    fn from_column(column: String) -> Self {
        Self {
            column,
            format: TimestampFormat::Iso,
            timezone: shanghai(),
        }
    }
    const EXPECTING: &'static str = "a column name or {column, format, timezone}";
}

/// `column` or `{column, …}`.
struct Short<T>(T);

impl<'de, T: FromColumn + Deserialize<'de>> Deserialize<'de> for Short<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: FromColumn + Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Short<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Short(T::from_column(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Short(T::from_column(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Short(T::from_column(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Short)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

fn optional_short<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromColumn + Deserialize<'de>,
{
    Ok(Option::<Short<T>>::deserialize(d)?.map(|s| s.0))
}

/// A YAML map into a list of entries, keeping the written order and refusing duplicates.
fn ordered<'de, D, T>(d: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: FromColumn + Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: FromColumn + Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of name → {}", T::EXPECTING)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, T)> = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(de::Error::custom(format!("`{key}` is listed twice")));
                }
                let value = map.next_value::<Short<T>>()?;
                out.push((key, value.0));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// A column name or a list of them.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a column name or a list of column names")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(column) = seq.next_element::<String>()? {
                out.push(column);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}
