//! The audit log of the admin API: `DIR/audit.jsonl`, one JSON object per request, appended.
//!
//! An entry says who (token name and role; none when the token was missing or unknown), what
//! (method, path, status), when and from where (the peer address). Paths never carry personal
//! values: route parameters that hold one (the identifier value of
//! `/profiles/by-identifier/{type}/{value}`) are recorded as `***`, and query strings are not
//! recorded. `pii` marks a successful request whose answer carried member-level data: `clear`
//! (an admin saw personal information) or `masked`.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use portrait_core::time::{parse_iso, Millis};
use serde::{Deserialize, Serialize};

use crate::access::Role;

/// How member-level data was shown, when a request read some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiRead {
    /// Personal information in clear (an admin).
    Clear,
    /// Personal information masked.
    Masked,
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the answer was sent, ISO-8601 UTC.
    pub at: String,
    /// Token name; `null` when the token was missing or unknown.
    pub token: Option<String>,
    /// The token's role.
    pub role: Option<Role>,
    /// HTTP method.
    pub method: String,
    /// Path, personal values replaced by `***`, without the query string.
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
    /// Peer address (`ip:port`), when known.
    pub peer: Option<String>,
    /// Set when member-level data was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiRead>,
}

/// The append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creates with mode 0600) `DIR/audit.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("audit.jsonl");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends one entry as one line (one `write` call on an `O_APPEND` file: lines never
    /// interleave). A failure is logged, not answered: the response is already decided.
    pub fn record(&self, entry: &AuditEntry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit entry");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot append to the audit log");
        }
    }

    /// The newest `limit` entries at or after `since`, newest first. Lines that do not decode
    /// (a torn last line after a crash) are skipped.
    pub fn read(&self, limit: usize, since: Option<Millis>) -> std::io::Result<Vec<AuditEntry>> {
        let file = std::fs::File::open(&self.path)?;
        let mut newest = VecDeque::with_capacity(limit.min(4096));
        for line in std::io::BufReader::new(file).lines() {
            let Ok(entry) = serde_json::from_str::<AuditEntry>(&line?) else {
                continue;
            };
            if since.is_some_and(|s| parse_iso(&entry.at).is_some_and(|at| at < s)) {
                continue;
            }
            if newest.len() == limit {
                newest.pop_front();
            }
            newest.push_back(entry);
        }
        Ok(newest.into_iter().rev().collect())
    }
}

/// The path to record for a request to `template` (a route such as
/// `/api/v1/profiles/by-identifier/{type}/{value}`): segments of the actual `path` are kept,
/// except those matching a parameter in `hidden`, which become `***`.
pub fn recorded_path(template: &str, path: &str, hidden: &[&str]) -> String {
    let mut out = Vec::new();
    let mut actual = path.split('/');
    for segment in template.split('/') {
        let given = actual.next().unwrap_or_default();
        let param = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match param {
            Some(p) if hidden.contains(&p) => out.push("***"),
            Some(_) => out.push(given),
            None => out.push(segment),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_path_segments_are_hidden() {
        assert_eq!(
            recorded_path(
                "/api/v1/profiles/by-identifier/{type}/{value}",
                "/api/v1/profiles/by-identifier/phone/%2B8613800001234",
                &["value"]
            ),
            "/api/v1/profiles/by-identifier/phone/***"
        );
        assert_eq!(
            recorded_path("/api/v1/profiles/{id}", "/api/v1/profiles/7", &[]),
            "/api/v1/profiles/7"
        );
    }

    #[test]
    fn entries_read_back_newest_first_within_limit_and_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        for (i, at) in [
            "2024-01-01T00:00:00.000Z",
            "2024-01-02T00:00:00.000Z",
            "2024-01-03T00:00:00.000Z",
        ]
        .iter()
        .enumerate()
        {
            log.record(&AuditEntry {
                at: at.to_string(),
                token: Some("admin".into()),
                role: Some(Role::Admin),
                method: "GET".into(),
                path: format!("/api/v1/profiles/{i}"),
                status: 200,
                peer: None,
                pii: Some(PiiRead::Clear),
            });
        }
        let all = log.read(10, None).expect("read");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].path, "/api/v1/profiles/2");
        let two = log
            .read(2, parse_iso("2024-01-01T12:00:00Z"))
            .expect("read");
        assert_eq!(
            two.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["/api/v1/profiles/2", "/api/v1/profiles/1"]
        );
        assert_eq!(
            log.read(1, parse_iso("2024-02-01T00:00:00Z"))
                .expect("read"),
            []
        );
    }
}
