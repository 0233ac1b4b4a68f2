//! JSON lines: one object per line, streamed line by line.

use std::io::{BufRead, BufReader};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Fail, Next, Raw, SourceRow};
use crate::cell::Cell;
use crate::error::{ImportError, RowError};
use crate::input::{Counting, Input, Stream};
use crate::plan::Plan;

pub(crate) struct JsonlSource {
    reader: BufReader<Stream>,
    /// Physical line number of the last line read.
    line: u64,
    /// Plan columns, each with its dotted path split into keys.
    columns: Vec<(String, Vec<String>)>,
}

impl JsonlSource {
    pub(crate) fn open(
        input: &Input,
        plan: &Plan,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, ImportError> {
        let stream: Stream = Box::new(Counting::new(input.open()?, counter));
        let columns = plan
            .columns
            .iter()
            .map(|c| (c.clone(), c.split('.').map(str::to_string).collect()))
            .collect();
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, stream),
            line: 0,
            columns,
        })
    }

    pub(crate) fn next_row(&mut self) -> Next {
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => self.line += 1,
                Err(e) => {
                    let line = self.line + 1;
                    let reason = format!("cannot read: {e}");
                    return Some(Err(Fail::Fatal(RowError {
                        line,
                        reason,
                        raw: String::new(),
                    })));
                }
            }
            let mut text = buf.trim_ascii();
            if self.line == 1 {
                text = text
                    .strip_prefix(b"\xEF\xBB\xBF".as_slice())
                    .unwrap_or(text)
                    .trim_ascii();
            }
            if text.is_empty() {
                continue;
            }
            let line = self.line;
            let reject = |reason: String| {
                let raw = String::from_utf8_lossy(buf.trim_ascii_end()).into_owned();
                Some(Err(Fail::Row(RowError { line, reason, raw })))
            };
            let object = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(object)) => object,
                Ok(other) => {
                    return reject(format!("expected a JSON object, found {}", kind_of(&other)))
                }
                Err(e) => return reject(format!("invalid JSON: {e}")),
            };
            let cells = self
                .columns
                .iter()
                .map(|(name, path)| {
                    lookup(&object, name, path)
                        .cloned()
                        .map_or(Cell::Null, Cell::from_json)
                })
                .collect();
            return Some(Ok(SourceRow {
                line,
                cells,
                raw: Raw::Line(buf),
            }));
        }
    }
}

/// A key as written, or else a dotted path into nested objects.
fn lookup<'a>(object: &'a Map<String, Value>, name: &str, path: &[String]) -> Option<&'a Value> {
    if let Some(v) = object.get(name) {
        return Some(v);
    }
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(object.get(first)?, |v, key| v.as_object()?.get(key))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
