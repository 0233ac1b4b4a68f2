//! Diagnostics: errors and warnings with a file position, a one-line `Display`
//! (`defs/tags.yaml:4:9: error: …`) and a multi-line [`Diagnostic::render`] with the source line
//! and a caret underline.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The definitions are refused.
    Error,
    /// The definitions compile, but something looks wrong (e.g. an unknown event name).
    Warning,
}

/// One error or warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell (`did you mean "count"?`).
    pub hint: Option<String>,
    /// The file (or a pseudo name such as `<audience>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Length of the offending text in characters (at least 1).
    pub len: usize,
    /// The text of the source line, for [`Diagnostic::render`].
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(message: impl Into<String>, file: &str, line: usize, col: usize) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            hint: None,
            file: file.to_string(),
            line,
            col,
            len: 1,
            source_line: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The diagnostic with the source line and a caret underline:
    ///
    /// ```text
    /// error: unknown function "cnt"
    ///  --> defs/tags.yaml:4:7
    ///   |
    /// 4 | rule: cnt(event = "X") > 1
    ///   |       ^^^
    ///   = hint: did you mean "count"?
    /// ```
    pub fn render(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        let mut out = format!(
            "{sev}: {}\n{pad}--> {}:{}:{}\n",
            self.message, self.file, self.line, self.col
        );
        if let Some(src) = &self.source_line {
            let src = src.trim_end();
            let before: String = src
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let avail = src
                .chars()
                .count()
                .saturating_sub(self.col.saturating_sub(1))
                .max(1);
            let carets = "^".repeat(self.len.clamp(1, avail));
            out.push_str(&format!(
                "{pad} |\n{num} | {src}\n{pad} | {before}{carets}\n"
            ));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("{pad} = hint: {h}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Where an expression's text sits in its file, so byte offsets in the expression can be
/// reported as `FILE:LINE:COL`.
///
/// The text of a YAML scalar may differ from the file (folded block scalars join lines, the
/// indentation is stripped), so the map holds one segment per source line: the byte offset in
/// the expression text where the line's content starts, and its file line and column.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// The file name.
    pub file: String,
    /// `(offset in the expression text, 1-based file line, 1-based column in chars, the whole
    /// file line)`, ascending by offset; never empty once built.
    pub segments: Vec<(usize, usize, usize, String)>,
}

impl SourceMap {
    /// A map for an expression that is a whole file of its own (line 1, column 1).
    pub fn standalone(file: &str, text: &str) -> Self {
        let mut segments = Vec::new();
        let mut off = 0;
        for (i, line) in text.split('\n').enumerate() {
            segments.push((off, i + 1, 1, line.to_string()));
            off += line.len() + 1;
        }
        SourceMap {
            file: file.to_string(),
            segments,
        }
    }

    /// The file line and column of byte offset `off` in `text`, and the source line.
    pub fn locate(&self, text: &str, off: usize) -> (usize, usize, Option<String>) {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.0 <= off)
            .or(self.segments.first());
        match seg {
            None => (1, 1, None),
            Some((start, line, col, src)) => {
                let start = (*start).min(text.len());
                let end = off.clamp(start, text.len());
                let chars = text.get(start..end).map_or(0, |s| s.chars().count());
                (*line, col + chars, Some(src.clone()))
            }
        }
    }

    /// A diagnostic for the byte range `start..end` of `text`.
    pub fn diag(
        &self,
        severity: Severity,
        text: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let (line, col, source_line) = self.locate(text, start);
        let len = text
            .get(start.min(text.len())..end.clamp(start.min(text.len()), text.len()))
            .map_or(1, |s| s.chars().count().max(1));
        Diagnostic {
            severity,
            message: message.into(),
            hint,
            file: self.file.clone(),
            line,
            col,
            len,
            source_line,
        }
    }
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `name` by edit distance (case-insensitive), if close enough to be
/// a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
