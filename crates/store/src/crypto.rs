//! Encryption at rest: a keyring of data keys wrapped by a master key.
//!
//! - The **master key** (32 bytes) never enters the data directory: it comes from
//!   `PORTRAIT_MASTER_KEY` (64 hex characters) or a key file (`--key-file`; `serve` creates
//!   `<DIR>.key` beside the data directory on first start when neither is given).
//! - `DIR/keyring.json` holds **data keys** (AES-256-GCM) and the **index secret** (which keys the
//!   identifier hashes), each wrapped (AES-256-GCM) under the master key. Rotating the master key
//!   rewraps the keyring; rotating the data key adds a new one for new writes and re-encrypts old
//!   records in place (same length), while readers keep every key they may meet.
//! - Every log record and the snapshot are encrypted with a data key: `key id (u32) | nonce (12) |
//!   ciphertext + tag`. Nonces are random (2^-32 collision bound far above any log's size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::sources::write_atomic;

/// Size of the index secret.
pub const INDEX_SECRET_BYTES: usize = portrait_core::profile::SECRET_BYTES;

/// The master key: wraps the keyring.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({:08x})", self.id())
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl MasterKey {
    /// Parses 64 hex characters.
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = hex_decode(text).filter(|b| b.len() == 32).ok_or_else(|| {
            StoreError::Crypto("a master key is 64 hex characters (32 bytes)".into())
        })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// Reads a key file (64 hex characters).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(StoreError::io(path))?;
        Self::parse(&text)
            .map_err(|_| StoreError::Crypto(format!("{}: not a Portrait key file", path.display())))
    }

    /// Writes the key to a new file with mode 0600 (refuses to overwrite).
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::io(path))?;
        f.write_all(hex_encode(&self.0).as_bytes())
            .map_err(StoreError::io(path))?;
        f.sync_all().map_err(StoreError::io(path))
    }

    /// A short, non-secret fingerprint.
    pub fn id(&self) -> u32 {
        let d = Sha256::digest(self.0);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    fn aead(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }

    /// The key file `serve` uses by default: beside the data directory, never inside it.
    pub fn default_path(data: &Path) -> PathBuf {
        let name = data
            .file_name()
            .map_or_else(|| "portrait".into(), |n| n.to_string_lossy().to_string());
        data.with_file_name(format!("{name}.key"))
    }
}

fn seal(aead: &Aes256Gcm, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + plain.len() + 16);
    let Ok(()) = seal_with(aead, &mut out, copy_of(plain));
    out
}

/// A `write` for [`seal_with`] that appends `plain` as it is.
fn copy_of(
    plain: &[u8],
) -> impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), std::convert::Infallible> + '_ {
    move |buf| {
        buf.extend_from_slice(plain);
        Ok(())
    }
}

/// Appends `nonce | ciphertext | tag` of what `write` appends to `out`: the plaintext is
/// written in place and encrypted where it lies (no copy of it, no buffer of its own).
fn seal_with<E>(
    aead: &Aes256Gcm,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let nonce: [u8; 12] = rand::random();
    out.extend_from_slice(&nonce);
    let start = out.len();
    write(out)?;
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    match aead.encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut out[start..]) {
        Ok(tag) => out.extend_from_slice(&tag),
        Err(_) => out.truncate(start),
    }
    Ok(())
}

fn open_sealed(aead: &Aes256Gcm, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 28 {
        return None;
    }
    aead.decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
        .ok()
}

#[derive(Serialize, Deserialize)]
struct WrappedKey {
    id: u32,
    /// base64(nonce | ciphertext) of the 32-byte key under the master key.
    wrapped: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    master_key_id: u32,
    active: u32,
    data_keys: Vec<WrappedKey>,
    index_secret: String,
}

/// An unwrapped data key: cipher, raw bytes (to rewrap), creation time.
type DataKey = (Aes256Gcm, [u8; 32], i64);

/// The data keys and index secret of one data directory, unwrapped in memory.
pub struct Keyring {
    path: PathBuf,
    master: RwLock<MasterKey>,
    keys: RwLock<BTreeMap<u32, DataKey>>,
    active: RwLock<u32>,
    index_secret: [u8; INDEX_SECRET_BYTES],
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(active {:08x})", *self.active.read())
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Keyring {
    /// Opens `DIR/keyring.json` with the master key, or creates it (new data key and index
    /// secret) when the directory has none.
    pub fn open_or_create(dir: &Path, master: MasterKey) -> Result<Self> {
        let path = dir.join("keyring.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: KeyringFile =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.master_key_id != master.id() {
                    return Err(StoreError::Crypto(format!(
                        "{}: the master key given ({:08x}) is not the one this data directory was encrypted with ({:08x})",
                        path.display(),
                        master.id(),
                        file.master_key_id
                    )));
                }
                let aead = master.aead();
                let unwrap = |text: &str| -> Result<Vec<u8>> {
                    let sealed = b64()
                        .decode(text)
                        .map_err(|e| StoreError::Crypto(e.to_string()))?;
                    open_sealed(&aead, &sealed).ok_or_else(|| {
                        StoreError::Crypto(format!("{}: a key does not unwrap", path.display()))
                    })
                };
                let mut keys = BTreeMap::new();
                for k in &file.data_keys {
                    let raw = unwrap(&k.wrapped)?;
                    let key: [u8; 32] = raw
                        .try_into()
                        .map_err(|_| StoreError::Crypto("bad data key".into()))?;
                    keys.insert(k.id, (Aes256Gcm::new((&key).into()), key, k.created_at));
                }
                let secret: [u8; INDEX_SECRET_BYTES] = unwrap(&file.index_secret)?
                    .try_into()
                    .map_err(|_| StoreError::Crypto("bad index secret".into()))?;
                Ok(Self {
                    path,
                    master: RwLock::new(master),
                    keys: RwLock::new(keys),
                    active: RwLock::new(file.active),
                    index_secret: secret,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; INDEX_SECRET_BYTES];
                for chunk in secret.chunks_mut(32) {
                    let r: [u8; 32] = rand::random();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                let ring = Self {
                    path,
                    master: RwLock::new(master),
                    keys: RwLock::new(BTreeMap::new()),
                    active: RwLock::new(0),
                    index_secret: secret,
                };
                ring.add_data_key()?;
                Ok(ring)
            }
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    /// The secret keying identifier hashes.
    pub fn index_secret(&self) -> [u8; INDEX_SECRET_BYTES] {
        self.index_secret
    }

    fn save(&self) -> Result<()> {
        let master = self.master.read();
        let aead = master.aead();
        let file = KeyringFile {
            master_key_id: master.id(),
            active: *self.active.read(),
            data_keys: self
                .keys
                .read()
                .iter()
                .map(|(id, (_, raw, created_at))| WrappedKey {
                    id: *id,
                    wrapped: b64().encode(seal(&aead, raw)),
                    created_at: *created_at,
                })
                .collect(),
            index_secret: b64().encode(seal(&aead, &self.index_secret)),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Crypto(e.to_string()))?;
        write_atomic(&self.path, &bytes)
    }

    /// Adds a new data key and makes it the one new records use. Returns its id.
    pub fn add_data_key(&self) -> Result<u32> {
        let raw: [u8; 32] = rand::random();
        let id = {
            let d = Sha256::digest(raw);
            u32::from_le_bytes([d[0], d[1], d[2], d[3]])
        };
        self.keys.write().insert(
            id,
            (
                Aes256Gcm::new((&raw).into()),
                raw,
                portrait_core::time::now(),
            ),
        );
        *self.active.write() = id;
        self.save()?;
        Ok(id)
    }

    /// Drops data keys other than the active one (after everything was re-encrypted).
    pub fn retire_old_keys(&self) -> Result<usize> {
        let active = *self.active.read();
        let mut keys = self.keys.write();
        let before = keys.len();
        keys.retain(|id, _| *id == active);
        let dropped = before - keys.len();
        drop(keys);
        self.save()?;
        Ok(dropped)
    }

    /// Rewraps the keyring under a new master key.
    pub fn rewrap(&self, new_master: MasterKey) -> Result<()> {
        *self.master.write() = new_master;
        self.save()
    }

    /// Id of the data key new records use.
    pub fn active(&self) -> u32 {
        *self.active.read()
    }

    /// Encrypts with the active data key: `key id | nonce | ciphertext+tag`.
    pub fn encrypt_into(&self, plain: &[u8], out: &mut Vec<u8>) {
        let Ok(()) = self.encrypt_with(out, copy_of(plain));
    }

    /// [`Keyring::encrypt_into`] of what `write` appends to `out`: the plaintext is written in
    /// place and encrypted where it lies (no copy of it, no buffer of its own).
    pub fn encrypt_with<E>(
        &self,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let active = *self.active.read();
        let keys = self.keys.read();
        let Some((aead, _, _)) = keys.get(&active) else {
            return Ok(());
        };
        out.extend_from_slice(&active.to_le_bytes());
        seal_with(aead, out, write)
    }

    /// Decrypts `key id | nonce | ciphertext+tag`.
    pub fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let id = sealed
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| StoreError::Crypto("truncated encrypted record".into()))?;
        let keys = self.keys.read();
        let (aead, _, _) = keys.get(&id).ok_or_else(|| {
            StoreError::Crypto(format!("record encrypted with unknown data key {id:08x}"))
        })?;
        open_sealed(aead, &sealed[4..]).ok_or_else(|| {
            StoreError::Crypto("record does not decrypt (wrong key or tampered)".into())
        })
    }

    /// Key id of an encrypted blob.
    pub fn key_of(sealed: &[u8]) -> Option<u32> {
        sealed
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// HMAC-SHA256 of `data` under `key`: for values that must be compared without being stored.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_round_trip_rotation_and_wrong_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = MasterKey::generate();
        let ring = Keyring::open_or_create(dir.path(), master.clone()).expect("create");
        let mut sealed = Vec::new();
        ring.encrypt_into(b"phone:+8613800000001", &mut sealed);
        assert!(!sealed.windows(4).any(|w| w == b"8613"));
        assert_eq!(
            ring.decrypt(&sealed).expect("decrypt"),
            b"phone:+8613800000001"
        );
        let secret = ring.index_secret();
        // A new data key: old records still decrypt.
        let new_id = ring.add_data_key().expect("rotate");
        assert_ne!(Keyring::key_of(&sealed), Some(new_id));
        assert!(ring.decrypt(&sealed).is_ok());
        // A new master key: the keyring is rewrapped; the old master no longer opens it.
        let master2 = MasterKey::generate();
        ring.rewrap(master2.clone()).expect("rewrap");
        drop(ring);
        assert!(Keyring::open_or_create(dir.path(), master).is_err());
        let ring = Keyring::open_or_create(dir.path(), master2).expect("reopen");
        assert_eq!(ring.index_secret(), secret);
        assert_eq!(
            ring.decrypt(&sealed).expect("decrypt"),
            b"phone:+8613800000001"
        );
        assert!(MasterKey::parse("abc").is_err());
    }
}
