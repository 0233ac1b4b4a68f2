//! Who may call the admin API: roles, API tokens and `DIR/tokens.json`.
//!
//! A token carries one [`Role`]. The admin token (`PORTRAIT_ADMIN_TOKEN` or `DIR/admin_token`)
//! is the token named `admin`, role `admin`. Further tokens live in `DIR/tokens.json`, which
//! keeps only a SHA-256 of each token (`sha256:<hex>`), never the token itself; the file has
//! mode 0600 and is replaced atomically. Write keys are not tokens: they only work on the
//! ingest API.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Roles are ordered: a higher role may do all a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Role {
    /// Aggregates only (`/api/v1/stats`): no member-level data.
    Analyst,
    /// Member-level data with personal information masked; file imports.
    Operator,
    /// Everything, personal information in clear.
    Admin,
}

impl Role {
    /// All roles, lowest first.
    pub const ALL: [Role; 3] = [Role::Analyst, Role::Operator, Role::Admin];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name; unknown names are an error that lists the roles.
    pub fn parse(text: &str) -> Result<Role, AccessError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| AccessError::UnknownRole(text.to_string()))
    }
}

impl TryFrom<String> for Role {
    type Error = AccessError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Role::parse(&text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of an admin request, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name (`admin` for the admin token).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Whether member-level data is shown to this caller with personal information in clear
    /// (admins) or masked (everyone else).
    pub fn sees_clear_pii(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Errors of the token registry.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A role name is not one of the roles.
    #[error("unknown role `{0}`; roles: analyst, operator, admin")]
    UnknownRole(String),
    /// A token name is malformed or reserved.
    #[error("token name `{0}` is invalid: use 1-64 letters, digits, `-`, `_` or `.`; `admin` is reserved for the admin token")]
    BadName(String),
    /// A token name is taken.
    #[error("a token named `{0}` already exists")]
    NameTaken(String),
    /// No token has that name.
    #[error("no token named `{0}`")]
    NoToken(String),
    /// `DIR/tokens.json` does not decode or is inconsistent.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AccessError + '_ {
    move |source| AccessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One API token as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Unique name, recorded in the audit log.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// `sha256:<64 hex digits>` of the token.
    pub hash: String,
    /// Creation time, ISO-8601 UTC.
    pub created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    tokens: Vec<TokenEntry>,
}

/// The stored hash of a token: `sha256:<hex>`.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A new random token (`pat_` and 32 hex digits).
pub fn new_token() -> String {
    format!("pat_{:032x}", rand::random::<u128>())
}

/// The name of the admin token.
pub const ADMIN_NAME: &str = "admin";

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != ADMIN_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The tokens of `DIR/tokens.json`.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// Loads `DIR/tokens.json` (absent: no tokens). Unknown roles, unknown fields, duplicate or
    /// malformed names and malformed hashes refuse the file.
    pub fn open(dir: &Path) -> Result<Self, AccessError> {
        let path = dir.join("tokens.json");
        let corrupt = |reason: String| AccessError::Corrupt {
            path: path.clone(),
            reason,
        };
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<OnDisk>(&bytes)
                    .map_err(|e| corrupt(e.to_string()))?
                    .tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        for (i, t) in entries.iter().enumerate() {
            if !valid_name(&t.name) {
                return Err(corrupt(AccessError::BadName(t.name.clone()).to_string()));
            }
            if entries[..i].iter().any(|o| o.name == t.name) {
                return Err(corrupt(format!("token name `{}` appears twice", t.name)));
            }
            let hex = t.hash.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(corrupt(format!(
                    "token `{}`: hash must be `sha256:` and 64 hex digits",
                    t.name
                )));
            }
        }
        Ok(Self { path, entries })
    }

    /// The tokens, oldest first.
    pub fn list(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The token whose hash is `hash`.
    pub fn by_hash(&self, hash: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|t| t.hash == hash)
    }

    /// Adds a token (a name is made up when none is given); returns its entry and the secret,
    /// which is not stored and cannot be shown again.
    pub fn add(
        &mut self,
        name: Option<&str>,
        role: Role,
    ) -> Result<(TokenEntry, String), AccessError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => loop {
                let n = format!("{role}-{:04x}", rand::random::<u16>());
                if !self.entries.iter().any(|t| t.name == n) {
                    break n;
                }
            },
        };
        if !valid_name(&name) {
            return Err(AccessError::BadName(name));
        }
        if self.entries.iter().any(|t| t.name == name) {
            return Err(AccessError::NameTaken(name));
        }
        let secret = new_token();
        let entry = TokenEntry {
            name,
            role,
            hash: token_hash(&secret),
            created_at: portrait_core::time::format_iso(portrait_core::time::now()),
        };
        let mut entries = self.entries.clone();
        entries.push(entry.clone());
        self.save(entries)?;
        Ok((entry, secret))
    }

    /// Removes the token named `name`.
    pub fn remove(&mut self, name: &str) -> Result<TokenEntry, AccessError> {
        let pos = self
            .entries
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| AccessError::NoToken(name.to_string()))?;
        let mut entries = self.entries.clone();
        let removed = entries.remove(pos);
        self.save(entries)?;
        Ok(removed)
    }

    /// Writes the file atomically with mode 0600, then takes the new entries.
    fn save(&mut self, entries: Vec<TokenEntry>) -> Result<(), AccessError> {
        use std::os::unix::fs::OpenOptionsExt;
        #[derive(Serialize)]
        struct Borrowed<'a> {
            tokens: &'a [TokenEntry],
        }
        let bytes = serde_json::to_vec_pretty(&Borrowed { tokens: &entries }).map_err(|e| {
            AccessError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        f.write_all(&bytes).map_err(io_error(&tmp))?;
        f.sync_all().map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_error(&self.path))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.entries = entries;
        Ok(())
    }
}

/// The admin token and the registry: answers "who is this bearer?".
#[derive(Debug)]
pub struct Access {
    admin_hash: String,
    tokens: std::sync::RwLock<Tokens>,
}

impl Access {
    /// Loads `DIR/tokens.json`; `admin_token` is the admin's token.
    pub fn open(dir: &Path, admin_token: &str) -> Result<Self, AccessError> {
        Ok(Self {
            admin_hash: token_hash(admin_token),
            tokens: std::sync::RwLock::new(Tokens::open(dir)?),
        })
    }

    /// The caller a bearer token stands for, if any.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let hash = token_hash(token);
        if hash == self.admin_hash {
            return Some(Caller {
                name: ADMIN_NAME.into(),
                role: Role::Admin,
            });
        }
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.by_hash(&hash).map(|t| Caller {
            name: t.name.clone(),
            role: t.role,
        })
    }

    /// Runs `f` on the registry (list, add, remove).
    pub fn with_tokens<T>(&self, f: impl FnOnce(&mut Tokens) -> T) -> T {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        f(&mut tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_with_mode_0600_and_reload() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tokens = Tokens::open(dir.path()).expect("open");
        let (entry, secret) = tokens.add(Some("ops"), Role::Operator).expect("add");
        assert_eq!(entry.hash, token_hash(&secret));
        let path = dir.path().join("tokens.json");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&secret));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            tokens.add(Some("ops"), Role::Analyst),
            Err(AccessError::NameTaken(_))
        ));
        assert!(matches!(
            tokens.add(Some("admin"), Role::Analyst),
            Err(AccessError::BadName(_))
        ));
        let (generated, _) = tokens.add(None, Role::Analyst).expect("add");
        assert!(generated.name.starts_with("analyst-"));

        let access = Access::open(dir.path(), "the-admin").expect("access");
        assert_eq!(
            access.authenticate(&secret).map(|c| (c.name, c.role)),
            Some(("ops".to_string(), Role::Operator))
        );
        assert_eq!(
            access.authenticate("the-admin").map(|c| c.role),
            Some(Role::Admin)
        );
        assert!(access.authenticate("nope").is_none());
        access.with_tokens(|t| t.remove("ops")).expect("remove");
        assert!(access.authenticate(&secret).is_none());
        assert_eq!(Tokens::open(dir.path()).expect("reload").list().len(), 1);
    }

    #[test]
    fn an_unknown_role_in_the_file_refuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hash = token_hash("x");
        std::fs::write(
            dir.path().join("tokens.json"),
            format!(
                r#"{{"tokens":[{{"name":"a","role":"superuser","hash":"{hash}","created_at":"2024-01-01T00:00:00Z"}}]}}"#
            ),
        )
        .expect("write");
        let err = Tokens::open(dir.path()).expect_err("refused").to_string();
        assert!(err.contains("unknown role `superuser`"), "{err}");
        assert!(matches!(
            Role::parse("root"),
            Err(AccessError::UnknownRole(_))
        ));
    }
}
