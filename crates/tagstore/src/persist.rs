//! Persistence: one file per tag plus `universe.bin`.
//!
//! File layout (integers little-endian):
//!
//! ```text
//! magic "PTAG" | version u16 (=1) | kind u8 | 0u8 | name_len u32 | name (UTF-8) | payload | crc32 u32
//! ```
//!
//! The CRC-32 (IEEE) covers every byte before it. Kinds and payloads:
//! - 0 universe, 1 bool: one bitmap;
//! - 2 enum: `count u32`, then per value `key_len u32 | key | bitmap`;
//! - 3 numeric: the bitmap of ids with a value, `encoding u8`, then one value per id in id
//!   order: encoding 0 = f64, 1 = i32 (used when every value is an integer in i32 range).
//!
//! A bitmap is `len u64 | Roaring portable serialization` (the format CRoaring, pyroaring and
//! ClickHouse read).
//!
//! Tag files are named `t-<hex of the UTF-8 name>.tag`, or `t-h<FNV-1a 64 hex>.tag` for names
//! longer than 100 bytes; the name inside the header is authoritative. Each file is written to a
//! temporary file, fsynced, renamed over the old one, then the directory is fsynced. Tags are
//! written before the universe; `open` prunes any tag id missing from the universe, so a crash
//! between files leaves a consistent (if partly older) store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::error::StoreError;
use crate::numeric::NumericColumn;
use crate::store::{EnumTag, Snapshot, TagData, TagStore, WriterState};

const MAGIC: &[u8; 4] = b"PTAG";
const VERSION: u16 = 1;
const KIND_UNIVERSE: u8 = 0;
const KIND_BOOL: u8 = 1;
const KIND_ENUM: u8 = 2;
const KIND_NUMERIC: u8 = 3;
const UNIVERSE_FILE: &str = "universe.bin";

/// What [`TagStore::save`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Tag files written.
    pub written: usize,
    /// Tag files deleted (removed tags).
    pub deleted: usize,
    /// Whether `universe.bin` was written.
    pub universe_written: bool,
    /// Bytes written.
    pub bytes: u64,
}

/// The file name of tag `name`.
pub fn tag_file_name(name: &str) -> String {
    if name.len() <= 100 {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("t-{hex}.tag")
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("t-h{h:016x}.tag")
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { op, path, source }
}

fn put_bitmap(out: &mut Vec<u8>, b: &RoaringBitmap) {
    out.extend_from_slice(&(b.serialized_size() as u64).to_le_bytes());
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut *out);
}

fn encode(kind: u8, name: &str, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    payload(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn encode_tag(name: &str, tag: &TagData) -> Vec<u8> {
    match tag {
        TagData::Bool(b) => encode(KIND_BOOL, name, |out| put_bitmap(out, b)),
        TagData::Enum(e) => encode(KIND_ENUM, name, |out| {
            out.extend_from_slice(&(e.values().len() as u32).to_le_bytes());
            for (k, b) in e.values() {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k.as_bytes());
                put_bitmap(out, b);
            }
        }),
        TagData::Numeric(c) => encode(KIND_NUMERIC, name, |out| {
            put_bitmap(out, c.present());
            let values = c.values_in_id_order();
            let small_ints = values
                .iter()
                .all(|&x| x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX));
            if small_ints {
                out.push(1);
                out.reserve(values.len() * 4);
                for &x in values {
                    out.extend_from_slice(&(x as i32).to_le_bytes());
                }
            } else {
                out.push(0);
                out.reserve(values.len() * 8);
                for &x in values {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }),
    }
}

/// Writes `bytes` to `dir/file` atomically (temp file, fsync, rename).
fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{file}.tmp"));
    let dst = dir.join(file);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(io_err("rename", &dst))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// A bounds-checked reader over a file's bytes; every failure names the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.corrupt(format!("truncated: need {n} bytes at offset {}", self.pos)));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.corrupt(format!("length {n} too large")))
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.corrupt("name or value is not UTF-8"))
    }

    fn bitmap(&mut self) -> Result<RoaringBitmap, StoreError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        RoaringBitmap::deserialize_from(bytes).map_err(|e| self.corrupt(format!("bad bitmap: {e}")))
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.corrupt(format!("{} trailing bytes", self.buf.len() - self.pos)))
        }
    }
}

/// Checks magic, version and CRC; returns `(kind, name, reader positioned at the payload)`.
fn decode_header<'a>(
    path: &'a Path,
    bytes: &'a [u8],
) -> Result<(u8, String, Reader<'a>), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < 16 {
        return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(trailer);
    let (stored, actual) = (u32::from_le_bytes(crc), crc32fast::hash(body));
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        path,
    };
    if r.take(4)? != MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    let version = r.u16()?;
    if version != VERSION {
        return Err(r.corrupt(format!("unsupported format version {version}")));
    }
    let kind = r.u8()?;
    let _reserved = r.u8()?;
    let name = r.string()?;
    Ok((kind, name, r))
}

fn decode_tag(kind: u8, mut r: Reader<'_>) -> Result<TagData, StoreError> {
    let tag = match kind {
        KIND_BOOL => TagData::Bool(r.bitmap()?),
        KIND_ENUM => {
            let n = r.u32()?;
            let mut values = Vec::new();
            for _ in 0..n {
                let k = r.string()?;
                values.push((k, r.bitmap()?));
            }
            TagData::Enum(EnumTag::new(values).map_err(|e| r.corrupt(e.to_string()))?)
        }
        KIND_NUMERIC => {
            let present = r.bitmap()?;
            let encoding = r.u8()?;
            let n = present.len() as usize;
            let width = match encoding {
                0 => 8,
                1 => 4,
                other => return Err(r.corrupt(format!("unknown value encoding {other}"))),
            };
            let raw = r.take(
                n.checked_mul(width)
                    .ok_or_else(|| r.corrupt("too many values"))?,
            )?;
            let values: Vec<f64> = if width == 8 {
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            } else {
                raw.chunks_exact(4)
                    .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                    .collect()
            };
            if values.iter().any(|x| x.is_nan()) {
                return Err(r.corrupt("NaN value"));
            }
            let ids: Vec<u32> = present.iter().collect();
            TagData::Numeric(NumericColumn::from_id_sorted(&ids, values))
        }
        other => return Err(r.corrupt(format!("unknown tag kind {other}"))),
    };
    r.end()?;
    Ok(tag)
}

impl TagStore {
    /// Writes the store to `dir` (created if missing). When `dir` is the directory the store was
    /// last opened from or saved to, only tags changed since are written and removed tags'
    /// files deleted; otherwise everything is written and `.tag` files of tags this store does
    /// not have are deleted. Holds the writer lock throughout (readers are not blocked).
    pub fn save(&self, dir: &Path) -> Result<SaveStats, StoreError> {
        let mut state = self.lock_writer();
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let snap = self.snapshot();
        let full = state.saved_dir.as_deref() != Some(dir);
        let mut stats = SaveStats::default();
        let mut files: BTreeMap<String, &str> = BTreeMap::new();
        for name in snap.tags.keys() {
            if let Some(other) = files.insert(tag_file_name(name), name) {
                return Err(StoreError::Collision {
                    name: other.to_owned(),
                    path: dir.join(tag_file_name(name)),
                });
            }
        }
        for (name, tag) in &snap.tags {
            if full || state.dirty.contains(name) {
                let bytes = encode_tag(name, tag);
                write_atomic(dir, &tag_file_name(name), &bytes)?;
                stats.written += 1;
                stats.bytes += bytes.len() as u64;
            }
        }
        let removed: Vec<String> = if full {
            // Files of tags this store does not have.
            let mut stale = Vec::new();
            for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
                let entry = entry.map_err(io_err("read", dir))?;
                let file = entry.file_name().to_string_lossy().into_owned();
                if file.ends_with(".tag") && !files.contains_key(&file) {
                    stale.push(file);
                }
            }
            stale
        } else {
            state
                .removed
                .iter()
                .filter(|n| !snap.tags.contains_key(*n))
                .map(|n| tag_file_name(n))
                .collect()
        };
        for file in removed {
            let path = dir.join(&file);
            match fs::remove_file(&path) {
                Ok(()) => stats.deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        op: "remove",
                        path,
                        source: e,
                    })
                }
            }
        }
        if full || state.universe_dirty {
            let bytes = encode(KIND_UNIVERSE, "", |out| put_bitmap(out, &snap.universe));
            write_atomic(dir, UNIVERSE_FILE, &bytes)?;
            stats.universe_written = true;
            stats.bytes += bytes.len() as u64;
        }
        sync_dir(dir)?;
        state.dirty.clear();
        state.removed.clear();
        state.universe_dirty = false;
        state.saved_dir = Some(dir.to_owned());
        Ok(stats)
    }

    /// Opens a store saved with [`TagStore::save`] (`dir` must exist; an empty directory is an
    /// empty store). Leftover temporary files are ignored; a truncated or corrupt file is a
    /// [`StoreError::Corrupt`] naming it. Tag ids missing from the universe are pruned (and the
    /// tag marked for rewriting).
    pub fn open(dir: &Path) -> Result<TagStore, StoreError> {
        let mut tags: BTreeMap<String, Arc<TagData>> = BTreeMap::new();
        let mut universe = None;
        let mut entries: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
            entries.push(entry.map_err(io_err("read", dir))?.path());
        }
        entries.sort();
        for path in entries {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_universe = file == UNIVERSE_FILE;
            if !is_universe && !file.ends_with(".tag") {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let (kind, name, r) = decode_header(&path, &bytes)?;
            if is_universe {
                if kind != KIND_UNIVERSE {
                    return Err(r.corrupt(format!("kind {kind} in the universe file")));
                }
                let mut r = r;
                let b = r.bitmap()?;
                r.end()?;
                universe = Some(b);
            } else {
                if file != tag_file_name(&name) {
                    return Err(StoreError::Collision { name, path });
                }
                let tag = decode_tag(kind, r)?;
                tags.insert(name, Arc::new(tag));
            }
        }
        let universe = match universe {
            Some(u) => u,
            None if tags.is_empty() => RoaringBitmap::new(),
            None => return Err(StoreError::MissingUniverse(dir.join(UNIVERSE_FILE))),
        };
        let mut dirty = BTreeSet::new();
        for (name, tag) in tags.iter_mut() {
            if !tag.present().is_subset(&universe) {
                let gone = tag.present() - &universe;
                let t = tag.without(&gone);
                *tag = Arc::new(t);
                dirty.insert(name.clone());
            }
        }
        let snapshot = Snapshot {
            universe: Arc::new(universe),
            tags,
            flats: Default::default(),
        };
        let state = WriterState {
            dirty,
            saved_dir: Some(dir.to_owned()),
            ..WriterState::default()
        };
        Ok(TagStore::from_parts(snapshot, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(tag_file_name("vip"), "t-766970.tag");
        assert_eq!(tag_file_name("阶段"), "t-e998b6e6aeb5.tag");
        let long = "x".repeat(101);
        assert!(tag_file_name(&long).starts_with("t-h"));
        assert_eq!(tag_file_name(&long).len(), "t-h".len() + 16 + ".tag".len());
    }
}
