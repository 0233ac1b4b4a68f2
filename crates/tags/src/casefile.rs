//! Data-driven test cases (`*.tagtest`): profiles, events, tag definitions and the expected
//! values or diagnostics, in a line format a non-programmer can write. Any engine can run
//! them: [`run`] takes the evaluator as a function.
//!
//! ```text
//! # a comment
//! as_of 2024-06-30T16:00:00Z            # the computation instant (RFC 3339); may change between cases
//! time_zone Asia/Shanghai               # optional, the default
//! known events ["Order Completed"]      # optional: names for unknown-name warnings (also traits, sources)
//! profile 1 traits {"skin_type": "敏感肌"}
//! profile 2                             # a profile without traits
//! event 1 2024-06-25T10:00:00Z track "Product Viewed" {"sku": "A1"}
//! event 2 2024-06-25T10:00:00Z page "Home" source=app
//! event 2 2024-06-25T10:00:00Z identify
//! external 1 credit_level "A"           # the value of an external tag
//! tags
//! <YAML definitions>
//! end
//! expect high_intent                    # one line per profile: id and value
//! 1 true
//! 2 false
//! expect-error                          # the one-line diagnostics, up to `end`
//! cases.tagtest:12:7: error: unknown function "cnt"; did you mean "count"?
//! end
//! expect-warnings                       # warnings of a definition set that compiles
//! end
//! ```
//!
//! Profiles, events and externals apply to every case in the file wherever they are written;
//! each `tags` block is one case, checked against the `expect…` blocks that follow it, using
//! the `as_of` in force at the `tags` line. Event offsets follow the file order. Values are
//! written `true`, `false`, `null`, numbers, JSON strings (`"active"`) and RFC 3339 instants;
//! numbers match within a relative 1e-9. Every profile must be listed in a value block.
//!
//! With bless on, [`run`] returns the file with every expectation block rewritten from the
//! actual results (and blocks added to cases that have none).

use std::collections::BTreeMap;

use chrono_tz::Tz;

use crate::compile::{compile, Known};
use crate::def::parse_defs_at;
use crate::eval::{parse_time, RefEvent, RefProfile};
use crate::ir::{Plan, TagBody};
use crate::value::Value;

/// A malformed case file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CaseError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// `expect TAG`: one value per profile id.
    Values {
        /// The tag.
        tag: String,
        /// `(profile id, value)`.
        values: Vec<(u32, Value)>,
        /// 0-based line range of the value lines (for blessing).
        lines: (usize, usize),
    },
    /// `expect-error`: the diagnostics' one-line texts.
    Errors {
        /// Expected lines.
        text: Vec<String>,
        /// 0-based line range of the text.
        lines: (usize, usize),
    },
    /// `expect-warnings`: the warnings' one-line texts.
    Warnings {
        /// Expected lines.
        text: Vec<String>,
        /// 0-based line range of the text.
        lines: (usize, usize),
    },
}

/// One `tags` block and its expectations.
#[derive(Debug, Clone)]
pub struct Case {
    /// 0-based line of the `tags` directive.
    pub line: usize,
    /// The `as_of` in force (ms).
    pub as_of: i64,
    /// What the compiler knows (names for warnings, the time zone).
    pub known: Known,
    /// The YAML text.
    pub defs: String,
    /// 0-based line where the YAML starts.
    pub defs_line: usize,
    /// 0-based line of the `end` closing the YAML.
    pub end_line: usize,
    /// Expectations, in file order.
    pub expectations: Vec<Expectation>,
}

/// A parsed case file.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// The file name used in diagnostics.
    pub file: String,
    /// Profiles in ascending id order, with their events and externals.
    pub profiles: Vec<RefProfile>,
    /// The cases.
    pub cases: Vec<Case>,
    /// The file's lines.
    pub lines: Vec<String>,
}

/// Parses an expected value: `true`, `false`, `null`, a number, a JSON string or an RFC 3339
/// instant.
pub fn parse_value(s: &str) -> Option<Value> {
    let s = s.trim();
    match s {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        "null" => return Some(Value::Null),
        _ => {}
    }
    if s.starts_with('"') {
        return serde_json::from_str::<String>(s)
            .ok()
            .map(|x| Value::Str(x.as_str().into()));
    }
    if let Some(t) = parse_time(s) {
        return Some(Value::Time(t));
    }
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(Value::Num)
}

/// True when `actual` matches `expected` (numbers within a relative 1e-9).
pub fn values_match(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Num(a), Value::Num(b)) => {
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        }
        (a, b) => a == b,
    }
}

/// Parses a case file.
pub fn parse(text: &str, file: &str) -> Result<CaseFile, CaseError> {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let e = |line: usize, message: String| CaseError {
        file: file.to_string(),
        line: line + 1,
        message,
    };
    let mut profiles: BTreeMap<u32, RefProfile> = BTreeMap::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut as_of: Option<i64> = None;
    let mut known = Known::default();
    let mut offset = 0u64;
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i].as_str();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "as_of" => {
                as_of = Some(
                    parse_time(rest).ok_or_else(|| e(i, format!("invalid instant {rest:?}")))?,
                );
            }
            "time_zone" => {
                known.time_zone = rest
                    .parse::<Tz>()
                    .map_err(|_| e(i, format!("unknown time zone {rest:?}")))?;
            }
            "known" => {
                let (what, list) = rest.split_once(char::is_whitespace).unwrap_or((rest, "[]"));
                let names: Vec<String> = serde_json::from_str(list.trim())
                    .map_err(|x| e(i, format!("expected a JSON list of names: {x}")))?;
                match what {
                    "events" => known.events = names,
                    "traits" => known.traits = names,
                    "sources" => known.sources = names,
                    other => {
                        return Err(e(
                            i,
                            format!("unknown `known {other}` (events, traits, sources)"),
                        ))
                    }
                }
            }
            "profile" => {
                let (id, more) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let id: u32 = id
                    .parse()
                    .map_err(|_| e(i, format!("invalid profile id {id:?}")))?;
                let p = profiles.entry(id).or_insert_with(|| RefProfile {
                    id,
                    ..Default::default()
                });
                let more = more.trim();
                if let Some(json) = more.strip_prefix("traits") {
                    p.traits = serde_json::from_str(json.trim())
                        .map_err(|x| e(i, format!("traits must be a JSON object: {x}")))?;
                } else if !more.is_empty() {
                    return Err(e(i, "expected `profile ID [traits {…}]`".into()));
                }
            }
            "external" => {
                let mut it = rest.splitn(3, char::is_whitespace);
                let (Some(id), Some(tag), Some(v)) = (it.next(), it.next(), it.next()) else {
                    return Err(e(i, "expected `external ID TAG VALUE`".into()));
                };
                let id: u32 = id
                    .parse()
                    .map_err(|_| e(i, format!("invalid profile id {id:?}")))?;
                let v = parse_value(v).ok_or_else(|| e(i, format!("invalid value {v:?}")))?;
                profiles
                    .entry(id)
                    .or_insert_with(|| RefProfile {
                        id,
                        ..Default::default()
                    })
                    .externals
                    .insert(tag.to_string(), v);
            }
            "event" => {
                let ev = parse_event(rest, offset).map_err(|m| e(i, m))?;
                offset += 1;
                profiles
                    .entry(ev.0)
                    .or_insert_with(|| RefProfile {
                        id: ev.0,
                        ..Default::default()
                    })
                    .events
                    .push(ev.1);
            }
            "tags" => {
                let start = i + 1;
                let end = (start..lines.len())
                    .find(|&k| lines[k].trim() == "end")
                    .ok_or_else(|| e(i, "`tags` without a closing `end`".into()))?;
                let as_of = as_of.ok_or_else(|| e(i, "`as_of` must come before `tags`".into()))?;
                cases.push(Case {
                    line: i,
                    as_of,
                    known: known.clone(),
                    defs: lines[start..end].join("\n"),
                    defs_line: start,
                    end_line: end,
                    expectations: Vec::new(),
                });
                i = end + 1;
                continue;
            }
            "expect" => {
                let case = cases
                    .last_mut()
                    .ok_or_else(|| e(i, "`expect` before any `tags`".into()))?;
                let mut values = Vec::new();
                let mut k = i + 1;
                while k < lines.len() {
                    let l = lines[k].trim();
                    if !l.starts_with(|c: char| c.is_ascii_digit()) {
                        break;
                    }
                    let (id, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
                    let id: u32 = id
                        .parse()
                        .map_err(|_| e(k, format!("invalid profile id {id:?}")))?;
                    let v = parse_value(v)
                        .ok_or_else(|| e(k, format!("invalid value {:?}", v.trim())))?;
                    values.push((id, v));
                    k += 1;
                }
                case.expectations.push(Expectation::Values {
                    tag: rest.to_string(),
                    values,
                    lines: (i + 1, k),
                });
                i = k;
                continue;
            }
            "expect-error" | "expect-warnings" => {
                let case = cases
                    .last_mut()
                    .ok_or_else(|| e(i, format!("`{word}` before any `tags`")))?;
                let end = (i + 1..lines.len())
                    .find(|&k| lines[k].trim() == "end")
                    .ok_or_else(|| e(i, format!("`{word}` without a closing `end`")))?;
                let text: Vec<String> = lines[i + 1..end]
                    .iter()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                let lines_r = (i + 1, end);
                case.expectations.push(if word == "expect-error" {
                    Expectation::Errors {
                        text,
                        lines: lines_r,
                    }
                } else {
                    Expectation::Warnings {
                        text,
                        lines: lines_r,
                    }
                });
                i = end + 1;
                continue;
            }
            other => return Err(e(i, format!("unknown directive `{other}`"))),
        }
        i += 1;
    }
    Ok(CaseFile {
        file: file.to_string(),
        profiles: profiles.into_values().collect(),
        cases,
        lines,
    })
}

fn parse_event(rest: &str, offset: u64) -> Result<(u32, RefEvent), String> {
    let mut it = rest.splitn(4, char::is_whitespace);
    let usage = "expected `event ID TIMESTAMP KIND [\"name\"] [source=NAME] [{properties}]`";
    let (Some(id), Some(ts), Some(kind)) = (it.next(), it.next(), it.next()) else {
        return Err(usage.into());
    };
    let id: u32 = id
        .parse()
        .map_err(|_| format!("invalid profile id {id:?}"))?;
    let ts = parse_time(ts).ok_or_else(|| format!("invalid timestamp {ts:?}"))?;
    let mut ev = RefEvent {
        offset,
        name: None,
        kind: kind.to_string(),
        source: "test".into(),
        timestamp_ms: ts,
        properties: serde_json::Map::new(),
    };
    let mut rest = it.next().unwrap_or("").trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("source=") {
            let (s, r2) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
            ev.source = s.to_string();
            rest = r2.trim();
        } else if rest.starts_with('"') || rest.starts_with('{') {
            let mut stream =
                serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
            let v = match stream.next() {
                Some(Ok(v)) => v,
                Some(Err(x)) => return Err(format!("invalid JSON: {x}")),
                None => return Err(usage.into()),
            };
            let used = stream.byte_offset();
            match v {
                serde_json::Value::String(s) => ev.name = Some(s),
                serde_json::Value::Object(m) => ev.properties = m,
                _ => return Err(usage.into()),
            }
            rest = rest[used..].trim();
        } else {
            return Err(usage.into());
        }
    }
    Ok((id, ev))
}

/// An engine: computes every tag of a plan for the profiles at `as_of`; `result[p][t]`.
pub type Engine<'a> = &'a dyn Fn(&Plan, &[RefProfile], i64) -> Vec<Vec<Value>>;

/// The result of running a case file.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Human-readable failures (empty = pass).
    pub failures: Vec<String>,
    /// With bless: the file rewritten with the actual results.
    pub blessed: Option<String>,
}

/// Runs every case of a file against `engine`.
pub fn run(text: &str, file: &str, engine: Engine<'_>, bless: bool) -> Result<Outcome, CaseError> {
    let cf = parse(text, file)?;
    let mut out = Outcome::default();
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for case in &cf.cases {
        let at = format!("{file}:{}", case.line + 1);
        let compiled = parse_defs_at(&case.defs, file, case.defs_line)
            .and_then(|defs| compile(&defs, &case.known));
        let (plan, warnings, errors) = match compiled {
            Ok(c) => (Some(c.plan), c.warnings, Vec::new()),
            Err(d) => (None, Vec::new(), d),
        };
        let err_lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let warn_lines: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        let results = plan.as_ref().map(|p| engine(p, &cf.profiles, case.as_of));
        let actual_values = |tag: &str| -> Option<Vec<(u32, Value)>> {
            let (plan, res) = (plan.as_ref()?, results.as_ref()?);
            let t = plan.tag_index(tag)?;
            Some(
                cf.profiles
                    .iter()
                    .zip(res)
                    .map(|(p, row)| (p.id, row.get(t).cloned().unwrap_or(Value::Null)))
                    .collect(),
            )
        };
        let mut has = (false, false);
        for x in &case.expectations {
            match x {
                Expectation::Errors { text, lines } => {
                    has.0 = true;
                    if *text != err_lines {
                        out.failures.push(format!(
                            "{at}: expected errors\n  {}\nfound\n  {}",
                            text.join("\n  "),
                            if err_lines.is_empty() {
                                "(none)".to_string()
                            } else {
                                err_lines.join("\n  ")
                            }
                        ));
                    }
                    edits.push((lines.0, lines.1, err_lines.clone()));
                }
                Expectation::Warnings { text, lines } => {
                    has.1 = true;
                    if *text != warn_lines {
                        out.failures.push(format!(
                            "{at}: expected warnings\n  {}\nfound\n  {}",
                            text.join("\n  "),
                            warn_lines.join("\n  ")
                        ));
                    }
                    edits.push((lines.0, lines.1, warn_lines.clone()));
                }
                Expectation::Values { tag, values, lines } => {
                    let Some(actual) = actual_values(tag) else {
                        if errors.is_empty() {
                            out.failures
                                .push(format!("{at}: no tag \"{tag}\" in the plan"));
                        }
                        continue;
                    };
                    for (id, v) in &actual {
                        match values.iter().find(|(i, _)| i == id) {
                            None => out.failures.push(format!(
                                "{at}: expect {tag}: profile {id} not listed (actual {v})"
                            )),
                            Some((_, e)) if !values_match(e, v) => out.failures.push(format!(
                                "{at}: expect {tag}: profile {id}: expected {e}, found {v}"
                            )),
                            _ => {}
                        }
                    }
                    for (id, _) in values {
                        if !actual.iter().any(|(i, _)| i == id) {
                            out.failures
                                .push(format!("{at}: expect {tag}: no profile {id}"));
                        }
                    }
                    edits.push((
                        lines.0,
                        lines.1,
                        actual.iter().map(|(i, v)| format!("{i} {v}")).collect(),
                    ));
                }
            }
        }
        if !errors.is_empty() && !has.0 {
            out.failures.push(format!(
                "{at}: unexpected errors:\n  {}",
                err_lines.join("\n  ")
            ));
        }
        if !warnings.is_empty() && !has.1 {
            out.failures.push(format!(
                "{at}: unexpected warnings:\n  {}",
                warn_lines.join("\n  ")
            ));
        }
        if case.expectations.is_empty() {
            // Blessing a new case: add blocks after the YAML's `end`.
            let mut add = Vec::new();
            if !errors.is_empty() {
                add.push("expect-error".to_string());
                add.extend(err_lines.iter().cloned());
                add.push("end".into());
            } else if let Some(plan) = &plan {
                if !warnings.is_empty() {
                    add.push("expect-warnings".to_string());
                    add.extend(warn_lines.iter().cloned());
                    add.push("end".into());
                }
                for t in &plan.tags {
                    if matches!(t.body, TagBody::External) {
                        continue;
                    }
                    add.push(format!("expect {}", t.name));
                    if let Some(vals) = actual_values(&t.name) {
                        add.extend(vals.iter().map(|(i, v)| format!("{i} {v}")));
                    }
                }
            }
            edits.push((case.end_line + 1, case.end_line + 1, add));
            out.failures
                .push(format!("{at}: a case without expectations"));
        }
    }
    if bless {
        let mut lines = cf.lines.clone();
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (a, b, new) in edits {
            let b = b.min(lines.len());
            let a = a.min(b);
            lines.splice(a..b, new);
        }
        let mut s = lines.join("\n");
        s.push('\n');
        out.blessed = Some(s);
    }
    Ok(out)
}
