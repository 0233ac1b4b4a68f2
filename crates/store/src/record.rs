//! Log records and their on-disk envelope.
//!
//! A log record's payload starts with a format byte:
//! - `P`: plain bincode of [`LogRecord`] (no keyring configured: tests and benchmarks);
//! - `E`: bincode encrypted with a data key (see [`crate::crypto`]);
//! - `S`: an erased message's skeleton, overwritten in place (same length, zero padded): kind,
//!   source, times, and the identifiers replaced by keyed hashes. Replaying it re-creates the same
//!   profile ids (so ids stay stable when state is rebuilt from the log) and nothing personal;
//! - `X`: a bare tombstone, when even the skeleton does not fit;
//! - `R`: a message whose retention period ended, overwritten in place (same length, zero
//!   padded): kind, messageId (deduplication), source, times and identifiers exactly as they
//!   were, the traits the profile still shows from it, and no event name, properties, context
//!   or raw ids. Replaying it links and resolves exactly as the original did.
//!
//! The snapshot uses the same envelope.

use portrait_core::{Identifier, Message, ProfileId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use bincode::Options as _;

use crate::crypto::Keyring;
use crate::error::{Result, StoreError};

const PLAIN: u8 = b'P';
const ENCRYPTED: u8 = b'E';
const ERASED: u8 = b'X';
const SKELETON: u8 = b'S';
const EXPIRED: u8 = b'R';

/// A record of the log. `Skeleton` and `Expired` are never written as such: they are what `S`
/// and `R` payloads decode to. New variants go at the end (the encoding is positional).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LogRecord {
    Message(Box<Message>),
    Unmerge {
        profile: ProfileId,
        identifier: Identifier,
        at: i64,
    },
    Erase {
        profile: ProfileId,
        suppress: Vec<u128>,
        at: i64,
    },
    Skeleton(Box<Message>),
    /// Retention ended for these events, `(profile, [(event time, log offset)])`: written before
    /// the records are overwritten, so a crash in between is finished at the next start.
    Expire {
        events: Vec<(ProfileId, Vec<(i64, u64)>)>,
        at: i64,
    },
    Expired(Box<Message>),
}

/// Borrowed twin of [`LogRecord`] for encoding without copies (same variant order).
#[derive(Serialize)]
pub(crate) enum LogRecordRef<'a> {
    Message(&'a Message),
    Unmerge {
        profile: ProfileId,
        identifier: &'a Identifier,
        at: i64,
    },
    Erase {
        profile: ProfileId,
        suppress: &'a [u128],
        at: i64,
    },
}

/// bincode's serializer over a buffer with the options of `bincode::serialize`, as
/// [`Codec::serialize_with`] lends it.
pub(crate) type BincodeWriter<'a> = bincode::Serializer<
    &'a mut Vec<u8>,
    bincode::config::WithOtherIntEncoding<bincode::DefaultOptions, bincode::config::FixintEncoding>,
>;

/// Encodes and decodes record payloads, encrypting when a keyring is configured.
#[derive(Clone, Default, Debug)]
pub struct Codec {
    keyring: Option<Arc<Keyring>>,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: "log".into(),
        reason: reason.into(),
    }
}

impl Codec {
    /// A codec that encrypts with `keyring` (or writes plain records without one).
    pub fn new(keyring: Option<Arc<Keyring>>) -> Self {
        Self { keyring }
    }

    /// The keyring, if records are encrypted.
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    /// Encodes any serialisable value into `out` (cleared first).
    pub(crate) fn encode<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        match &self.keyring {
            None => {
                out.push(PLAIN);
                bincode::serialize_into(&mut *out, value).map_err(|e| corrupt(e.to_string()))
            }
            Some(ring) => {
                out.push(ENCRYPTED);
                ring.encrypt_with(out, |buf| {
                    bincode::serialize_into(buf, value).map_err(|e| corrupt(e.to_string()))
                })
            }
        }
    }

    /// Serialises, for [`Codec::seal`], what `write` writes with bincode's serializer (the
    /// options of `bincode::serialize`, one pass; a value can be written piece by piece).
    pub(crate) fn serialize_with(
        &self,
        write: impl FnOnce(&mut BincodeWriter<'_>) -> bincode::Result<()>,
    ) -> Result<Vec<u8>> {
        let mut out = match &self.keyring {
            None => vec![PLAIN],
            Some(_) => Vec::new(),
        };
        let mut ser = bincode::Serializer::new(
            &mut out,
            bincode::DefaultOptions::new().with_fixint_encoding(),
        );
        write(&mut ser).map_err(|e| corrupt(e.to_string()))?;
        Ok(out)
    }

    /// Finishes [`Codec::serialize_with`]'s output into a payload [`Codec::decode`] reads:
    /// encrypted when a keyring is configured (the same bytes [`Codec::encode`] writes).
    pub(crate) fn seal(&self, serialized: Vec<u8>) -> Vec<u8> {
        match &self.keyring {
            None => serialized,
            Some(ring) => {
                let mut out = Vec::with_capacity(serialized.len() + 64);
                out.push(ENCRYPTED);
                ring.encrypt_into(&serialized, &mut out);
                out
            }
        }
    }

    /// Decodes a payload; `None` for a tombstone.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        payload: &[u8],
    ) -> Result<Option<T>> {
        match payload.first() {
            Some(&PLAIN) => bincode::deserialize(&payload[1..])
                .map(Some)
                .map_err(|e| corrupt(e.to_string())),
            Some(&ENCRYPTED) => {
                let ring = self.keyring.as_ref().ok_or_else(|| {
                    StoreError::Crypto(
                        "the data is encrypted: set PORTRAIT_MASTER_KEY or give the key file"
                            .into(),
                    )
                })?;
                let plain = ring.decrypt(&payload[1..])?;
                bincode::deserialize(&plain)
                    .map(Some)
                    .map_err(|e| corrupt(e.to_string()))
            }
            Some(&ERASED) => Ok(None),
            _ => Err(corrupt("unknown record format")),
        }
    }

    /// Decodes a log record; `None` for a bare tombstone. An erased message's skeleton decodes
    /// to [`LogRecord::Skeleton`], an expired message to [`LogRecord::Expired`].
    pub(crate) fn decode_record(&self, payload: &[u8]) -> Result<Option<LogRecord>> {
        let wrapper = payload.first().copied();
        if wrapper != Some(SKELETON) && wrapper != Some(EXPIRED) {
            return self.decode(payload);
        }
        let len = payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|l| 5 + l <= payload.len())
            .ok_or_else(|| corrupt("bad skeleton"))?;
        let inner: Option<Message> = self.decode(&payload[5..5 + len])?;
        Ok(inner.map(|m| {
            if wrapper == Some(EXPIRED) {
                LogRecord::Expired(Box::new(m))
            } else {
                LogRecord::Skeleton(Box::new(m))
            }
        }))
    }

    /// Re-encrypts a payload (or a skeleton's inner record) with the active data key, keeping
    /// its length; `None` when it is already under the active key, plain, or a tombstone.
    pub(crate) fn reencrypt(&self, payload: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(ring) = &self.keyring else {
            return Ok(None);
        };
        let start = match payload.first() {
            Some(&ENCRYPTED) => 0,
            Some(&SKELETON | &EXPIRED) if payload.get(5) == Some(&ENCRYPTED) => 5,
            _ => return Ok(None),
        };
        let inner_len = if start == 0 {
            payload.len()
        } else {
            5 + u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize
        };
        let sealed = payload
            .get(start + 1..inner_len)
            .ok_or_else(|| corrupt("bad record"))?;
        if Keyring::key_of(sealed) == Some(ring.active()) {
            return Ok(None);
        }
        let plain = ring.decrypt(sealed)?;
        let mut out = payload[..start + 1].to_vec();
        ring.encrypt_into(&plain, &mut out);
        out.extend_from_slice(&payload[inner_len..]);
        Ok(Some(out))
    }

    /// Whether a payload (or a skeleton's inner record) is encrypted with a key other than the
    /// active one.
    pub(crate) fn is_stale(&self, payload: &[u8]) -> bool {
        let Some(ring) = &self.keyring else {
            return false;
        };
        let sealed = match payload.first() {
            Some(&ENCRYPTED) => payload.get(1..),
            Some(&SKELETON | &EXPIRED) if payload.get(5) == Some(&ENCRYPTED) => payload.get(6..),
            _ => None,
        };
        sealed.is_some_and(|s| Keyring::key_of(s) != Some(ring.active()))
    }

    /// The in-place replacement of an erased message of `len` bytes: its skeleton when it fits,
    /// else a bare tombstone. `pseudonym` maps an identifier to a non-reversible stand-in.
    pub(crate) fn skeleton(
        &self,
        m: &Message,
        len: usize,
        pseudonym: impl Fn(&Identifier) -> String,
    ) -> Vec<u8> {
        let skeleton = stripped(
            m,
            String::new(),
            "{}".into(),
            m.identifiers
                .iter()
                .map(|id| Identifier::new(id.kind.clone(), pseudonym(id)))
                .collect(),
        );
        let mut inner = Vec::new();
        if self.encode(&skeleton, &mut inner).is_err() || 5 + inner.len() > len {
            return tombstone(len);
        }
        let mut out = Vec::with_capacity(len);
        out.push(SKELETON);
        out.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        out.extend_from_slice(&inner);
        out.resize(len, 0);
        out
    }
}

impl Codec {
    /// The in-place replacement of a message of `len` bytes whose retention period ended:
    /// kind, messageId, source, event and receive times and identifiers unchanged, `traits`
    /// (JSON text) the traits to keep, everything else dropped. `None` when it does not fit
    /// (then the record is left as it is).
    pub(crate) fn expired(&self, m: &Message, traits: String, len: usize) -> Option<Vec<u8>> {
        let kept = stripped(m, m.message_id.clone(), traits, m.identifiers.clone());
        let mut inner = Vec::new();
        if self.encode(&kept, &mut inner).is_err() || 5 + inner.len() > len {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.push(EXPIRED);
        out.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        out.extend_from_slice(&inner);
        out.resize(len, 0);
        Some(out)
    }
}

/// A tombstone of `len` bytes.
pub(crate) fn tombstone(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(1)];
    v[0] = ERASED;
    v
}

/// `m` with its content dropped: kind, source and times kept, the given message id, traits
/// (JSON text) and identifiers, everything else empty (erasure skeletons, expired events).
fn stripped(
    m: &Message,
    message_id: String,
    traits: String,
    identifiers: Vec<Identifier>,
) -> Message {
    Message {
        kind: m.kind,
        message_id,
        source: m.source,
        event: None,
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: m.timestamp,
        received_at: m.received_at,
        sent_at: None,
        original_timestamp: None,
        traits,
        properties: "{}".into(),
        context: "{}".into(),
        identifiers,
    }
}
