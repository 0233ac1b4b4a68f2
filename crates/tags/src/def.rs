//! Tag definitions in YAML: parsing (with file positions for every expression), validation
//! of the fields, and serialisation back to YAML.
//!
//! A file holds one definition or several separated by `---` lines. Fields: `name` (required,
//! `[a-z][a-z0-9_]*`), `title`, `owner`, `description`, `refresh` (`realtime` | `hourly` |
//! `daily` | `cron "0 3 * * *"`, default `daily`), `kind` (`rule` | `metric` | `stage` |
//! `buckets` | `external`, inferred from the body field when absent) and the body:
//! `rule:` | `value:` | `cases:` | `of:` with `quantiles:` or `thresholds:` and `reverse:` |
//! `value_type:` with `key:`. Unknown fields are errors.

use crate::diag::{Diagnostic, Severity, SourceMap};
use crate::value::Type;

/// When a tag is recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Refresh {
    /// On every event (incremental engine).
    Realtime,
    /// Every hour.
    Hourly,
    /// Every day (the default).
    #[default]
    Daily,
    /// On a five-field cron schedule (`0 3 * * *`).
    Cron(String),
}

impl Refresh {
    /// The YAML text of the policy (`daily`, `cron "0 3 * * *"`).
    pub fn as_text(&self) -> String {
        match self {
            Refresh::Realtime => "realtime".into(),
            Refresh::Hourly => "hourly".into(),
            Refresh::Daily => "daily".into(),
            Refresh::Cron(c) => format!("cron \"{c}\""),
        }
    }
}

/// An expression's text and where it sits in its file. Equality compares the text only: the
/// position is not part of a definition's meaning.
#[derive(Debug, Clone)]
pub struct ExprSrc {
    /// The expression text.
    pub text: String,
    /// Positions, for diagnostics.
    pub map: SourceMap,
}

impl PartialEq for ExprSrc {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl ExprSrc {
    /// An expression that is not in a file (line 1, column 1 of `file`).
    pub fn standalone(text: &str, file: &str) -> Self {
        ExprSrc {
            text: text.to_string(),
            map: SourceMap::standalone(file, text),
        }
    }

    /// A diagnostic for a byte range of the text.
    pub fn diag(
        &self,
        severity: Severity,
        start: usize,
        end: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        self.map
            .diag(severity, &self.text, start, end, message, hint)
    }
}

/// How bucket bounds are found.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketsDef {
    /// `quantiles: n`.
    Quantiles(u32),
    /// `thresholds: [t1, t2, …]`, ascending.
    Thresholds(Vec<f64>),
}

/// The body of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum TagKindDef {
    /// `rule:` a boolean expression.
    Rule(ExprSrc),
    /// `kind: metric`, `value:` an expression.
    Metric(ExprSrc),
    /// `kind: stage`, `cases:` a list of `label: expression`, tried in order.
    Stage(Vec<(String, ExprSrc)>),
    /// `kind: buckets`, `of:` a number expression.
    Buckets {
        /// The bucketed expression.
        of: ExprSrc,
        /// Quantiles or thresholds.
        scheme: BucketsDef,
        /// Reverse the bucket numbers.
        reverse: bool,
    },
    /// `kind: external`: values come from outside.
    External {
        /// The value type.
        value_type: Type,
        /// The identifier type the vendor file is keyed by.
        key: Option<String>,
    },
}

impl TagKindDef {
    /// The kind's YAML name.
    pub fn name(&self) -> &'static str {
        match self {
            TagKindDef::Rule(_) => "rule",
            TagKindDef::Metric(_) => "metric",
            TagKindDef::Stage(_) => "stage",
            TagKindDef::Buckets { .. } => "buckets",
            TagKindDef::External { .. } => "external",
        }
    }
}

/// One tag definition.
#[derive(Debug, Clone, PartialEq)]
pub struct TagDef {
    /// Unique name, `[a-z][a-z0-9_]*`.
    pub name: String,
    /// Display title (Chinese is normal).
    pub title: Option<String>,
    /// Owning team or person.
    pub owner: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Refresh policy.
    pub refresh: Refresh,
    /// Kind and body.
    pub kind: TagKindDef,
    /// Where the definition is (not part of its meaning: equality ignores it).
    pub origin: Origin,
}

/// The file and line where a definition's YAML document starts.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// File name.
    pub file: String,
    /// 1-based line of the document's first line.
    pub line: usize,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

const FIELDS: &[&str] = &[
    "name",
    "title",
    "owner",
    "description",
    "refresh",
    "kind",
    "rule",
    "value",
    "cases",
    "of",
    "quantiles",
    "thresholds",
    "reverse",
    "value_type",
    "key",
];

/// Parses a file of definitions. Errors name `FILE:LINE:COL`.
pub fn parse_defs(text: &str, file: &str) -> Result<Vec<TagDef>, Vec<Diagnostic>> {
    parse_defs_with(text, file, &[])
}

/// [`parse_defs`] for a file that may start with a parameter block — a first document holding
/// only `params:`, a mapping of names to scalar defaults — whose `${name}` placeholders are
/// replaced in the definitions below it. `overrides` (`--set name=value`) replace defaults; an
/// override or a placeholder naming no parameter is an error. The stored definitions carry the
/// substituted values, so every version records the thresholds it was computed with.
pub fn parse_defs_with(
    text: &str,
    file: &str,
    overrides: &[(String, String)],
) -> Result<Vec<TagDef>, Vec<Diagnostic>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let end = lines.iter().position(|l| {
        let t = l.trim_end();
        t == "---" || t.starts_with("--- ")
    });
    let head = end.map_or(text.to_string(), |e| lines[..e].join("\n"));
    let params: Option<serde_yaml::Mapping> = serde_yaml::from_str::<serde_yaml::Value>(&head)
        .ok()
        .and_then(|v| match v {
            serde_yaml::Value::Mapping(m) if m.len() == 1 => {
                m.get("params").and_then(|p| p.as_mapping().cloned())
            }
            _ => None,
        });
    let err = |msg: String, line: usize| vec![Diagnostic::error(msg, file, line, 1)];
    let Some(params) = params else {
        if let Some((k, _)) = overrides.first() {
            return Err(err(format!("--set {k}: this file declares no params"), 1));
        }
        return parse_defs_at(text, file, 0);
    };
    let mut values: Vec<(String, String)> = Vec::new();
    for (k, v) in &params {
        let (Some(k), Some(v)) = (k.as_str(), scalar_text(v)) else {
            return Err(err(
                "params: each parameter is a name with a number or text default".into(),
                1,
            ));
        };
        values.push((k.to_string(), v));
    }
    for (k, v) in overrides {
        match values.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => {
                let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                return Err(err(
                    format!(
                        "--set {k}: no such parameter (params: {})",
                        names.join(", ")
                    ),
                    1,
                ));
            }
        }
    }
    // Blank out the parameter block (line numbers stay true) and substitute the rest.
    let skip = end.map_or(lines.len(), |e| e + 1);
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if i < skip {
            continue;
        }
        let mut rest = *line;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let Some(close) = rest[at..].find('}') else {
                return Err(err("unclosed ${ placeholder".into(), i + 1));
            };
            let name = &rest[at + 2..at + close];
            match values.iter().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => return Err(err(format!("${{{name}}} names no parameter"), i + 1)),
            }
            rest = &rest[at + close + 1..];
        }
        out.push_str(rest);
    }
    parse_defs_at(&out, file, 0)
}

/// Like [`parse_defs`] for text that starts after `line_offset` lines of its file (e.g. a YAML
/// block embedded in a test case file).
pub fn parse_defs_at(
    text: &str,
    file: &str,
    line_offset: usize,
) -> Result<Vec<TagDef>, Vec<Diagnostic>> {
    let lines: Vec<&str> = text.split('\n').collect();
    // Split into documents at `---` lines; remember each document's first line (0-based).
    let mut docs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push((start, i));
            start = i + 1;
        }
    }
    docs.push((start, lines.len()));
    let mut defs = Vec::new();
    let mut diags = Vec::new();
    for (from, to) in docs {
        let doc_lines = &lines[from..to];
        let has_content = doc_lines.iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if !has_content {
            continue;
        }
        let doc = Doc {
            lines: doc_lines,
            first: from + line_offset,
            file,
        };
        match doc.parse() {
            Ok(d) => defs.push(d),
            Err(mut e) => diags.append(&mut e),
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for d in &defs {
        if seen.contains(&d.name.as_str()) {
            diags.push(
                Diagnostic::error(
                    format!("tag \"{}\" is defined twice", d.name),
                    file,
                    d.origin.line,
                    1,
                )
                .with_hint("tag names are unique"),
            );
        }
        seen.push(&d.name);
    }
    if diags.is_empty() {
        Ok(defs)
    } else {
        Err(diags)
    }
}

struct Doc<'a> {
    lines: &'a [&'a str],
    /// 0-based file line of `lines[0]`.
    first: usize,
    file: &'a str,
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

impl Doc<'_> {
    fn text(&self) -> String {
        self.lines.join("\n")
    }

    fn err_line(&self, idx: usize, col: usize, msg: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::error(msg, self.file, self.first + idx + 1, col);
        d.source_line = self.lines.get(idx).map(|s| s.to_string());
        d
    }

    /// The line index and column (0-based byte) of a mapping key `key:` at `indent`, searching
    /// from line `from`; `dash` allows a leading `- `.
    fn find_key(&self, key: &str, from: usize, dash: bool) -> Option<(usize, usize)> {
        for (i, l) in self.lines.iter().enumerate().skip(from) {
            let mut rest = l.trim_start();
            let mut col = indent_of(l);
            if dash {
                if let Some(r) = rest.strip_prefix('-') {
                    let r2 = r.trim_start();
                    col += rest.len() - r2.len();
                    rest = r2;
                }
            } else if indent_of(l) != 0 {
                continue;
            }
            for q in ["", "\"", "'"] {
                let pat = format!("{q}{key}{q}:");
                if rest.starts_with(&pat) {
                    return Some((i, col));
                }
            }
        }
        None
    }

    fn key_diag(&self, key: &str, msg: impl Into<String>) -> Diagnostic {
        match self.find_key(key, 0, false) {
            Some((i, c)) => {
                let mut d = self.err_line(i, c + 1, msg);
                d.len = key.chars().count();
                d
            }
            None => self.err_line(0, 1, msg),
        }
    }

    /// Builds the source map of expression `value` written after `key:` on line `key_line`
    /// (the key starts at byte `key_col`): the inline part on the key line, then every more
    /// indented continuation line whose content is found, in order, in the value.
    fn locate_expr(&self, value: &str, key_line: usize, key_col: usize) -> SourceMap {
        let file_line = |i: usize| self.first + i + 1;
        let chars_before = |l: &str, byte: usize| l.get(..byte).map_or(0, |s| s.chars().count());
        let mut segments = Vec::new();
        let line = self.lines.get(key_line).copied().unwrap_or("");
        let after_key = line
            .get(key_col..)
            .and_then(|r| r.find(':').map(|p| key_col + p + 1))
            .unwrap_or(line.len());
        let rest = line.get(after_key..).unwrap_or("");
        let rest_trim = rest.trim_start();
        let key_indent = indent_of(line);
        let mut pos = 0usize;
        let block = rest_trim.starts_with('|') || rest_trim.starts_with('>');
        if !block && !rest_trim.is_empty() {
            let mut off = after_key + (rest.len() - rest_trim.len());
            let mut content = rest_trim.trim_end();
            if let Some(c) = content.strip_prefix(['"', '\'']) {
                off += 1;
                content = c.trim_end_matches(['"', '\'']);
            }
            segments.push((
                0,
                file_line(key_line),
                chars_before(line, off) + 1,
                line.to_string(),
            ));
            pos = content.len().min(value.len());
        }
        if pos < value.len() {
            for (i, l) in self.lines.iter().enumerate().skip(key_line + 1) {
                let t = l.trim();
                if t.is_empty() {
                    continue;
                }
                if indent_of(l) <= key_indent {
                    break;
                }
                let t = t.trim_matches(['"', '\'']);
                let Some(p) = value.get(pos..).and_then(|v| v.find(t)) else {
                    break;
                };
                let off = pos + p;
                let lead = l.find(t).unwrap_or(indent_of(l));
                segments.push((off, file_line(i), chars_before(l, lead) + 1, l.to_string()));
                pos = off + t.len();
            }
        }
        if segments.is_empty() {
            segments.push((0, file_line(key_line), key_col + 1, line.to_string()));
        }
        SourceMap {
            file: self.file.to_string(),
            segments,
        }
    }

    fn parse(&self) -> Result<TagDef, Vec<Diagnostic>> {
        let text = self.text();
        let value: serde_yaml::Value = match serde_yaml::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let (line, col) = e
                    .location()
                    .map_or((0, 1), |l| (l.line().saturating_sub(1), l.column()));
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                return Err(vec![self.err_line(
                    line,
                    col,
                    format!("invalid YAML: {msg}"),
                )]);
            }
        };
        let serde_yaml::Value::Mapping(map) = value else {
            return Err(vec![self.err_line(
                0,
                1,
                "a tag definition must be a YAML mapping",
            )]);
        };
        let mut errs = Vec::new();
        let get = |k: &str| map.get(serde_yaml::Value::String(k.into()));
        for (k, _) in &map {
            let name = match k {
                serde_yaml::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if !FIELDS.contains(&name.as_str()) {
                let mut d = self.key_diag(&name, format!("unknown field `{name}`"));
                let hint = match crate::diag::closest(&name, FIELDS.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if name == "audience" => {
                        "audiences are defined separately, not as tag fields".to_string()
                    }
                    None => format!("fields are: {}", FIELDS.join(", ")),
                };
                d.hint = Some(hint);
                errs.push(d);
            }
        }
        let string_field = |k: &str, errs: &mut Vec<Diagnostic>| -> Option<String> {
            match map.get(serde_yaml::Value::String(k.into())) {
                None | Some(serde_yaml::Value::Null) => None,
                Some(serde_yaml::Value::String(s)) => Some(s.clone()),
                Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
                Some(serde_yaml::Value::Bool(b)) => Some(b.to_string()),
                Some(_) => {
                    errs.push(self.key_diag(k, format!("field `{k}` must be text")));
                    None
                }
            }
        };
        let name = string_field("name", &mut errs);
        let title = string_field("title", &mut errs);
        let owner = string_field("owner", &mut errs);
        let description = string_field("description", &mut errs);
        let refresh_text = string_field("refresh", &mut errs);
        let kind_text = string_field("kind", &mut errs);
        let name = match name {
            None => {
                errs.push(self.err_line(0, 1, "missing field `name`"));
                String::new()
            }
            Some(n) => {
                if !valid_name(&n) {
                    errs.push(
                        self.key_diag("name", format!("invalid tag name \"{n}\""))
                            .with_hint(
                            "names are lower-case letters, digits and `_`, starting with a letter",
                        ),
                    );
                }
                n
            }
        };
        let refresh = match refresh_text.as_deref().map(str::trim) {
            None => Refresh::Daily,
            Some("realtime") => Refresh::Realtime,
            Some("hourly") => Refresh::Hourly,
            Some("daily") => Refresh::Daily,
            Some(t) if t.starts_with("cron") => {
                let c = t["cron".len()..]
                    .trim()
                    .trim_matches(['"', '\''])
                    .trim()
                    .to_string();
                if c.split_whitespace().count() != 5 {
                    errs.push(
                        self.key_diag("refresh", format!("invalid cron schedule \"{c}\""))
                            .with_hint("five fields: minute hour day-of-month month day-of-week, e.g. cron \"0 3 * * *\""),
                    );
                }
                Refresh::Cron(c)
            }
            Some(other) => {
                errs.push(
                    self.key_diag("refresh", format!("invalid refresh \"{other}\""))
                        .with_hint("one of realtime, hourly, daily, cron \"0 3 * * *\""),
                );
                Refresh::Daily
            }
        };
        let has = |k: &str| map.contains_key(serde_yaml::Value::String(k.into()));
        let kind_name = match kind_text.as_deref() {
            Some(k) => k.to_string(),
            None if has("rule") => "rule".into(),
            None if has("cases") => "stage".into(),
            None if has("of") => "buckets".into(),
            None if has("value_type") => "external".into(),
            None if has("value") => "metric".into(),
            None => {
                errs.push(
                    self.err_line(0, 1, format!("tag \"{name}\" has no body"))
                        .with_hint("give `rule:`, or a `kind:` with its fields (metric: value, stage: cases, buckets: of, external: value_type)"),
                );
                return Err(errs);
            }
        };
        let allowed: &[&str] = match kind_name.as_str() {
            "rule" => &["rule"],
            "metric" => &["value"],
            "stage" => &["cases"],
            "buckets" => &["of", "quantiles", "thresholds", "reverse"],
            "external" => &["value_type", "key"],
            other => {
                errs.push(
                    self.key_diag("kind", format!("unknown kind \"{other}\""))
                        .with_hint("one of rule, metric, stage, buckets, external"),
                );
                return Err(errs);
            }
        };
        for f in [
            "rule",
            "value",
            "cases",
            "of",
            "quantiles",
            "thresholds",
            "reverse",
            "value_type",
            "key",
        ] {
            if has(f) && !allowed.contains(&f) {
                errs.push(self.key_diag(
                    f,
                    format!("field `{f}` does not belong to a {kind_name} tag"),
                ));
            }
        }
        let expr_field = |k: &str, errs: &mut Vec<Diagnostic>| -> Option<ExprSrc> {
            match get(k) {
                None => {
                    errs.push(self.err_line(0, 1, format!("a {kind_name} tag needs `{k}:`")));
                    None
                }
                Some(v) => match scalar_text(v) {
                    Some(t) => {
                        let (line, col) = self.find_key(k, 0, false).unwrap_or((0, 0));
                        Some(ExprSrc {
                            map: self.locate_expr(&t, line, col),
                            text: t,
                        })
                    }
                    None => {
                        errs.push(self.key_diag(k, format!("`{k}` must be an expression (text)")));
                        None
                    }
                },
            }
        };
        let kind = match kind_name.as_str() {
            "rule" => expr_field("rule", &mut errs).map(TagKindDef::Rule),
            "metric" => expr_field("value", &mut errs).map(TagKindDef::Metric),
            "stage" => self.parse_cases(get("cases"), &mut errs),
            "buckets" => {
                let of = expr_field("of", &mut errs);
                let reverse = match get("reverse") {
                    None => false,
                    Some(serde_yaml::Value::Bool(b)) => *b,
                    Some(_) => {
                        errs.push(self.key_diag("reverse", "`reverse` must be true or false"));
                        false
                    }
                };
                let scheme = match (get("quantiles"), get("thresholds")) {
                    (Some(q), None) => match q.as_u64() {
                        Some(n) if (2..=1000).contains(&n) => Some(BucketsDef::Quantiles(n as u32)),
                        _ => {
                            errs.push(self.key_diag(
                                "quantiles",
                                "`quantiles` must be a whole number from 2 to 1000",
                            ));
                            None
                        }
                    },
                    (None, Some(serde_yaml::Value::Sequence(ts))) => {
                        let vals: Option<Vec<f64>> =
                            ts.iter().map(serde_yaml::Value::as_f64).collect();
                        match vals {
                            Some(v) if !v.is_empty() && v.windows(2).all(|w| w[0] < w[1]) => {
                                Some(BucketsDef::Thresholds(v))
                            }
                            _ => {
                                errs.push(self.key_diag(
                                    "thresholds",
                                    "`thresholds` must be a non-empty list of strictly ascending numbers",
                                ));
                                None
                            }
                        }
                    }
                    (None, Some(_)) => {
                        errs.push(
                            self.key_diag("thresholds", "`thresholds` must be a list of numbers"),
                        );
                        None
                    }
                    (Some(_), Some(_)) => {
                        errs.push(
                            self.key_diag(
                                "thresholds",
                                "give `quantiles` or `thresholds`, not both",
                            ),
                        );
                        None
                    }
                    (None, None) => {
                        errs.push(self.err_line(
                            0,
                            1,
                            "a buckets tag needs `quantiles:` or `thresholds:`",
                        ));
                        None
                    }
                };
                match (of, scheme) {
                    (Some(of), Some(scheme)) => Some(TagKindDef::Buckets {
                        of,
                        scheme,
                        reverse,
                    }),
                    _ => None,
                }
            }
            _ => {
                let value_type = match string_field("value_type", &mut errs).as_deref() {
                    Some("string") => Some(Type::Str),
                    Some("number") => Some(Type::Number),
                    Some("bool") => Some(Type::Bool),
                    Some("time") => Some(Type::Time),
                    Some(other) => {
                        errs.push(
                            self.key_diag("value_type", format!("unknown value_type \"{other}\""))
                                .with_hint("one of string, number, bool, time"),
                        );
                        None
                    }
                    None => {
                        errs.push(self.err_line(0, 1, "an external tag needs `value_type:`"));
                        None
                    }
                };
                let key = string_field("key", &mut errs);
                value_type.map(|value_type| TagKindDef::External { value_type, key })
            }
        };
        match kind {
            Some(kind) if errs.is_empty() => Ok(TagDef {
                name,
                title,
                owner,
                description,
                refresh,
                kind,
                origin: Origin {
                    file: self.file.to_string(),
                    line: self.first + 1,
                },
            }),
            _ => {
                if errs.is_empty() {
                    errs.push(self.err_line(0, 1, "invalid tag definition"));
                }
                Err(errs)
            }
        }
    }

    fn parse_cases(
        &self,
        v: Option<&serde_yaml::Value>,
        errs: &mut Vec<Diagnostic>,
    ) -> Option<TagKindDef> {
        let Some(serde_yaml::Value::Sequence(items)) = v else {
            errs.push(
                self.key_diag("cases", "`cases` must be a list of `- label: condition`")
                    .with_hint("e.g. cases:\n  - active: count(event = \"Order Completed\", within 30d) >= 1"),
            );
            return None;
        };
        let from = self.find_key("cases", 0, false).map_or(0, |(l, _)| l + 1);
        let mut search_from = from;
        let mut cases = Vec::new();
        for item in items {
            let entry = match item {
                serde_yaml::Value::Mapping(m) if m.len() == 1 => m.iter().next(),
                _ => None,
            };
            let Some((serde_yaml::Value::String(label), expr)) = entry else {
                errs.push(self.key_diag("cases", "each case is one `label: condition` pair"));
                continue;
            };
            let Some(text) = scalar_text(expr) else {
                errs.push(self.key_diag("cases", format!("case `{label}` needs a condition")));
                continue;
            };
            let (line, col) = self.find_key(label, search_from, true).unwrap_or((from, 0));
            search_from = line + 1;
            cases.push((
                label.clone(),
                ExprSrc {
                    map: self.locate_expr(&text, line, col),
                    text,
                },
            ));
        }
        if cases.is_empty() {
            errs.push(self.key_diag("cases", "a stage needs at least one case"));
            return None;
        }
        Some(TagKindDef::Stage(cases))
    }
}

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.trim_end().to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True for names matching `[a-z][a-z0-9_]*`.
pub fn valid_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some('a'..='z'))
        && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Serialises definitions back to YAML (`---` between documents); parsing the result gives
/// equal definitions.
pub fn to_yaml(defs: &[TagDef]) -> String {
    use serde_yaml::Value as Y;
    let s = |t: &str| Y::String(t.to_string());
    let mut docs = Vec::new();
    for d in defs {
        let mut m = serde_yaml::Mapping::new();
        m.insert(s("name"), s(&d.name));
        for (k, v) in [
            ("title", &d.title),
            ("owner", &d.owner),
            ("description", &d.description),
        ] {
            if let Some(v) = v {
                m.insert(s(k), s(v));
            }
        }
        m.insert(s("kind"), s(d.kind.name()));
        if d.refresh != Refresh::Daily {
            m.insert(s("refresh"), s(&d.refresh.as_text()));
        }
        match &d.kind {
            TagKindDef::Rule(e) => {
                m.insert(s("rule"), s(&e.text));
            }
            TagKindDef::Metric(e) => {
                m.insert(s("value"), s(&e.text));
            }
            TagKindDef::Stage(cases) => {
                let items = cases
                    .iter()
                    .map(|(l, e)| {
                        let mut c = serde_yaml::Mapping::new();
                        c.insert(s(l), s(&e.text));
                        Y::Mapping(c)
                    })
                    .collect();
                m.insert(s("cases"), Y::Sequence(items));
            }
            TagKindDef::Buckets {
                of,
                scheme,
                reverse,
            } => {
                m.insert(s("of"), s(&of.text));
                match scheme {
                    BucketsDef::Quantiles(n) => {
                        m.insert(s("quantiles"), Y::Number((*n).into()));
                    }
                    BucketsDef::Thresholds(ts) => {
                        let items = ts
                            .iter()
                            .map(|t| {
                                if t.fract() == 0.0 && t.abs() < 9.0e15 {
                                    Y::Number((*t as i64).into())
                                } else {
                                    Y::Number((*t).into())
                                }
                            })
                            .collect();
                        m.insert(s("thresholds"), Y::Sequence(items));
                    }
                }
                if *reverse {
                    m.insert(s("reverse"), Y::Bool(true));
                }
            }
            TagKindDef::External { value_type, key } => {
                let t = match value_type {
                    Type::Number => "number",
                    Type::Bool => "bool",
                    Type::Time => "time",
                    _ => "string",
                };
                m.insert(s("value_type"), s(t));
                if let Some(k) = key {
                    m.insert(s("key"), s(k));
                }
            }
        }
        docs.push(serde_yaml::to_string(&Y::Mapping(m)).unwrap_or_default());
    }
    docs.join("---\n")
}
