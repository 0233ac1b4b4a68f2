//! Outgoing webhooks: the change stream delivered to HTTP endpoints, in order, with retries.
//!
//! Each webhook has its own cursor in the stream, a filter (kinds, names) and an optional
//! secret. A delivery is one `POST` of `{"webhook": ID, "changes": [...], "next": CURSOR}`
//! (up to [`BATCH`] changes) with `X-Portrait-Signature: sha256=<hex HMAC of the body>` when
//! a secret is set. A 2xx answer moves the cursor (persisted in `DIR/realtime/webhooks.json`);
//! anything else is retried with exponential backoff (1 s doubling to 5 min), so delivery is
//! at least once and in order. Receivers deduplicate by `seq`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::changes::ChangeLog;
use crate::engine::Kind;

/// Changes per delivery.
pub const BATCH: usize = 500;
const MAX_BACKOFF_MS: i64 = 300_000;

/// Errors of webhook management.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The definition is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No webhook has that id.
    #[error("no webhook {0}")]
    NotFound(String),
    /// The registry could not be written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// What a client asks for.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// Signs each body with HMAC-SHA256 when set.
    #[serde(default)]
    pub secret: Option<String>,
    /// Only these kinds (`tag`, `audience`); empty = all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only these tag or audience names; empty = all.
    #[serde(default)]
    pub names: Vec<String>,
    /// Start after this cursor; default: the newest change (only new changes are sent).
    #[serde(default)]
    pub since: Option<u64>,
}

/// A registered webhook and its delivery state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Webhook {
    /// Id (`wh_…`).
    pub id: String,
    /// Endpoint.
    pub url: String,
    /// Signing secret (never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Kind filter.
    pub kinds: Vec<Kind>,
    /// Name filter.
    pub names: Vec<String>,
    /// The last change delivered (or skipped by the filter).
    pub cursor: u64,
    /// Changes delivered.
    pub delivered: u64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Not before this instant (ms) after a failure.
    pub retry_at: i64,
}

impl Webhook {
    /// The webhook as shown by the API (no secret).
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url,
            "signed": self.secret.is_some(),
            "kinds": self.kinds,
            "names": self.names,
            "cursor": self.cursor,
            "delivered": self.delivered,
            "failures": self.failures,
            "last_error": self.last_error,
            "retry_at": (self.retry_at > 0).then(|| portrait_core::time::format_iso(self.retry_at)),
        })
    }

    fn wants(&self, line: &Line) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&line.kind))
            && (self.names.is_empty() || self.names.contains(&line.name))
    }
}

#[derive(Deserialize)]
struct Line {
    kind: Kind,
    name: String,
}

/// The registry and its delivery thread.
pub struct Webhooks {
    path: PathBuf,
    list: Arc<Mutex<Vec<Webhook>>>,
    changes: Arc<ChangeLog>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn save(path: &Path, list: &[Webhook]) -> Result<(), WebhookError> {
    let err = |e: &dyn std::fmt::Display| WebhookError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let text = serde_json::to_vec_pretty(list).map_err(|e| err(&e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| err(&e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))
}

impl Webhooks {
    /// Loads the registry at `path` and starts delivering.
    pub fn start(path: &Path, changes: Arc<ChangeLog>) -> Result<Arc<Webhooks>, WebhookError> {
        let list: Vec<Webhook> = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| WebhookError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
            Err(_) => Vec::new(),
        };
        let hooks = Arc::new(Webhooks {
            path: path.to_path_buf(),
            list: Arc::new(Mutex::new(list)),
            changes,
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        });
        let worker = hooks.clone();
        let handle = std::thread::Builder::new()
            .name("portrait-webhooks".into())
            .spawn(move || worker.run())
            .map_err(|e| WebhookError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        *hooks.thread.lock() = Some(handle);
        Ok(hooks)
    }

    /// Registers a webhook.
    pub fn add(&self, spec: WebhookSpec) -> Result<Webhook, WebhookError> {
        let url = spec.url.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return Err(WebhookError::Invalid(format!(
                "url: expected an http:// or https:// URL, got {url:?}"
            )));
        }
        let kinds = spec
            .kinds
            .iter()
            .map(|k| match k.as_str() {
                "tag" => Ok(Kind::Tag),
                "audience" => Ok(Kind::Audience),
                other => Err(WebhookError::Invalid(format!(
                    "kinds: unknown kind {other:?} (tag, audience)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut list = self.list.lock();
        let id = format!(
            "wh_{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!("{url}{}{}", portrait_core::time::now(), list.len()).as_bytes()
            )
        );
        let hook = Webhook {
            id,
            url,
            secret: spec.secret.filter(|s| !s.is_empty()),
            kinds,
            names: spec.names,
            cursor: spec.since.unwrap_or_else(|| self.changes.last_seq()),
            delivered: 0,
            failures: 0,
            last_error: None,
            retry_at: 0,
        };
        list.push(hook.clone());
        save(&self.path, &list)?;
        Ok(hook)
    }

    /// Every webhook.
    pub fn list(&self) -> Vec<Webhook> {
        self.list.lock().clone()
    }

    /// Removes a webhook.
    pub fn remove(&self, id: &str) -> Result<(), WebhookError> {
        let mut list = self.list.lock();
        let before = list.len();
        list.retain(|w| w.id != id);
        if list.len() == before {
            return Err(WebhookError::NotFound(id.to_string()));
        }
        save(&self.path, &list)
    }

    /// Stops delivering.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }

    fn run(&self) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        while !self.stop.load(Ordering::Relaxed) {
            let hooks = self.list.lock().clone();
            let mut worked = false;
            for hook in hooks {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if hook.cursor >= self.changes.last_seq()
                    || hook.retry_at > portrait_core::time::now()
                {
                    continue;
                }
                worked |= self.deliver(&agent, hook);
            }
            if !worked {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// One delivery attempt; true when the cursor moved.
    fn deliver(&self, agent: &ureq::Agent, hook: Webhook) -> bool {
        let (lines, next) = match self.changes.read(hook.cursor, BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "webhook: reading the change stream failed");
                return false;
            }
        };
        if lines.is_empty() {
            return false;
        }
        let wanted: Vec<&str> = lines
            .iter()
            .filter(|l| {
                serde_json::from_str::<Line>(l)
                    .map(|line| hook.wants(&line))
                    .unwrap_or(false)
            })
            .map(|l| l.as_ref())
            .collect();
        let result = if wanted.is_empty() {
            Ok(())
        } else {
            let body = format!(
                "{{\"webhook\":{},\"changes\":[{}],\"next\":{next}}}",
                serde_json::Value::String(hook.id.clone()),
                wanted.join(",")
            );
            post(agent, &hook, &body)
        };
        let mut list = self.list.lock();
        let Some(h) = list.iter_mut().find(|w| w.id == hook.id) else {
            return false;
        };
        let moved = match result {
            Ok(()) => {
                h.cursor = next;
                h.delivered += wanted.len() as u64;
                h.failures = 0;
                h.last_error = None;
                h.retry_at = 0;
                true
            }
            Err(e) => {
                h.failures += 1;
                let backoff = (1_000i64 << h.failures.min(20)).min(MAX_BACKOFF_MS);
                h.retry_at = portrait_core::time::now() + backoff;
                tracing::warn!(webhook = %h.id, failures = h.failures, error = %e, "webhook delivery failed; will retry");
                h.last_error = Some(e);
                false
            }
        };
        if let Err(e) = save(&self.path, &list) {
            tracing::error!(error = %e, "webhook registry write failed");
        }
        moved
    }
}

fn post(agent: &ureq::Agent, hook: &Webhook, body: &str) -> Result<(), String> {
    let mut req = agent
        .post(&hook.url)
        .set("Content-Type", "application/json")
        .set("User-Agent", "Portrait-Webhook/1");
    if let Some(secret) = &hook.secret {
        let mac = portrait_store::crypto::hmac(secret.as_bytes(), body.as_bytes());
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        req = req.set("X-Portrait-Signature", &format!("sha256={hex}"));
    }
    match req.send_string(body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
