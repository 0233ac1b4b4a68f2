//! The segmented append-only log.
//!
//! Layout: `DIR/log/{base:020}.log`, where `base` is the global offset of the segment's first
//! byte. A record is `len: u32 LE | crc32(payload): u32 LE | payload`. A record's global
//! offset (its [`portrait_core::EventRef`]) is `base + position`.
//!
//! Durability: [`Wal::append`] buffers; [`Wal::sync`] flushes and `fdatasync`s. Only synced
//! records are acknowledged. On open, the last segment is scanned and cut at the first record
//! that is torn or fails its checksum (a crash mid-write); earlier segments were synced before
//! the log rolled past them.
//!
//! In-place overwrites ([`Wal::overwrite`]: erasure, retention, key rotation) are crash-safe:
//! the new payloads are first written to `DIR/overwrite.redo` (checksummed, synced, renamed into
//! place), then written over the records, then the redo file is removed. A crash in between
//! leaves the redo file, which the next [`Wal::open`] applies again before it looks for a torn
//! tail, so a half-written record in the middle of the log is never taken for one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Result, StoreError};

const HEADER: u64 = 8;
/// Largest record accepted (a message is at most 32 KB of JSON; this leaves room).
pub const MAX_RECORD: u32 = 16 << 20;

/// The append-only log's writer. Readers use the shared [`LogReader`] from [`Wal::reader`].
pub struct Wal {
    dir: PathBuf,
    bases: Vec<u64>,
    active: BufWriter<File>,
    active_base: u64,
    active_len: u64,
    segment_bytes: u64,
    reader: Arc<LogReader>,
}

/// Random access to synced records, shareable across threads.
pub struct LogReader {
    dir: PathBuf,
    bases: parking_lot::RwLock<Vec<u64>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The redo file of an in-place overwrite (see the module docs).
const REDO: &str = "overwrite.redo";
const REDO_MAGIC: &[u8; 8] = b"PTREDO01";

/// Encodes a redo file: magic, then `offset u64 | len u32 | payload` per record, then the
/// CRC-32 of everything before it.
fn encode_redo(items: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let size: usize = items.iter().map(|(_, p)| 12 + p.len()).sum();
    let mut out = Vec::with_capacity(REDO_MAGIC.len() + size + 4);
    out.extend_from_slice(REDO_MAGIC);
    for (offset, payload) in items {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a redo file; `None` when it is incomplete or damaged (then no record was touched:
/// overwriting starts only once the redo file is durable).
fn decode_redo(bytes: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let body_len = bytes.len().checked_sub(4)?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc || !body.starts_with(REDO_MAGIC) {
        return None;
    }
    let mut rest = &body[REDO_MAGIC.len()..];
    let mut items = Vec::new();
    while !rest.is_empty() {
        let offset = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        items.push((offset, rest.get(12..12 + len)?.to_vec()));
        rest = &rest[12 + len..];
    }
    Some(items)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `items` over their records (header and payload) in the segments of `bases`, then
/// syncs every segment touched.
fn write_in_place(dir: &Path, bases: &[u64], items: &[(u64, Vec<u8>)]) -> Result<()> {
    let mut files: HashMap<u64, File> = HashMap::new();
    for (offset, payload) in items {
        let i = bases.partition_point(|b| *b <= *offset);
        let base = i
            .checked_sub(1)
            .map(|i| bases[i])
            .ok_or_else(|| StoreError::Corrupt {
                path: dir.to_path_buf(),
                reason: format!("offset {offset} is before the log"),
            })?;
        let path = segment_path(dir, base);
        let file = match files.entry(base) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(StoreError::io(&path))?,
            ),
        };
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        file.write_all_at(&record, offset - base)
            .map_err(StoreError::io(&path))?;
    }
    for (base, file) in files {
        file.sync_data()
            .map_err(StoreError::io(segment_path(dir, base)))?;
    }
    Ok(())
}

/// Finishes an overwrite a crash interrupted: applies `DIR/overwrite.redo` if it is complete,
/// then removes it. Returns the records rewritten.
fn recover_overwrite(dir: &Path, bases: &[u64]) -> Result<usize> {
    let path = dir.join(REDO);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(&path)(e)),
    };
    let n = match decode_redo(&bytes) {
        Some(items) => {
            write_in_place(dir, bases, &items)?;
            items.len()
        }
        None => {
            tracing::warn!(path = %path.display(), "incomplete overwrite redo file ignored");
            0
        }
    };
    std::fs::remove_file(&path).map_err(StoreError::io(&path))?;
    sync_dir(dir);
    Ok(n)
}

impl Wal {
    /// Opens (or creates) the log in `dir`, cutting a torn tail. Returns the log and the
    /// number of bytes cut.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, u64)> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
            let entry = entry.map_err(StoreError::io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|b| b.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        // Before the torn-tail scan: a record half overwritten by a crash is finished here.
        let redone = recover_overwrite(dir, &bases)?;
        if redone > 0 {
            tracing::warn!(
                records = redone,
                "finished an in-place overwrite a crash had interrupted"
            );
        }
        let active_base = *bases.last().unwrap_or(&0);
        let path = segment_path(dir, active_base);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        let file_len = file.metadata().map_err(StoreError::io(&path))?.len();
        let valid = scan_valid(&mut file, &path)?;
        let cut = file_len - valid;
        if cut > 0 {
            tracing::warn!(segment = %path.display(), bytes = cut, "cutting torn log tail");
            file.set_len(valid).map_err(StoreError::io(&path))?;
            file.sync_all().map_err(StoreError::io(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(StoreError::io(&path))?;
        let wal = Self {
            dir: dir.to_path_buf(),
            active: BufWriter::with_capacity(1 << 20, file),
            active_base,
            active_len: valid,
            segment_bytes,
            reader: Arc::new(LogReader {
                dir: dir.to_path_buf(),
                bases: parking_lot::RwLock::new(bases.clone()),
                files: Mutex::new(HashMap::new()),
            }),
            bases,
        };
        Ok((wal, cut))
    }

    /// Global offset where the next record will go.
    pub fn end(&self) -> u64 {
        self.active_base + self.active_len
    }

    /// Total bytes in the log.
    pub fn bytes(&self) -> u64 {
        self.end() - self.bases[0]
    }

    /// Appends a record (buffered; call [`Wal::sync`] before acknowledging). Returns its offset.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.dir.clone(),
                reason: "record too large".into(),
            })?;
        if self.active_len > 0 && self.active_len + HEADER + len as u64 > self.segment_bytes {
            self.roll()?;
        }
        let at = self.end();
        let crc = crc32fast::hash(payload);
        let w = &mut self.active;
        // The segment's path is built only for an error (not per record).
        w.write_all(&len.to_le_bytes())
            .and_then(|()| w.write_all(&crc.to_le_bytes()))
            .and_then(|()| w.write_all(payload))
            .map_err(|e| StoreError::io(segment_path(&self.dir, self.active_base))(e))?;
        self.active_len += HEADER + len as u64;
        Ok(at)
    }

    /// Flushes buffered records and makes them durable.
    pub fn sync(&mut self) -> Result<()> {
        self.active
            .flush()
            .and_then(|()| self.active.get_ref().sync_data())
            .map_err(|e| StoreError::io(segment_path(&self.dir, self.active_base))(e))
    }

    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let base = self.end();
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.active = BufWriter::with_capacity(1 << 20, file);
        self.active_base = base;
        self.active_len = 0;
        self.bases.push(base);
        self.reader.bases.write().push(base);
        Ok(())
    }

    /// Replaces the payloads of records in place with payloads of the same length (skeletons,
    /// expired records, or the same records re-encrypted), then syncs every segment touched.
    /// Offsets never move. Crash-safe: the payloads go to a redo file first (module docs).
    pub fn overwrite(&mut self, items: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let items: Vec<(u64, Vec<u8>)> = items.into_iter().collect();
        if items.is_empty() {
            return Ok(());
        }
        let active = segment_path(&self.dir, self.active_base);
        self.active.flush().map_err(StoreError::io(&active))?;
        for (offset, payload) in &items {
            let old = self.reader.read(*offset)?;
            if old.len() != payload.len() {
                return Err(StoreError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("overwrite at {offset} changes the record length"),
                });
            }
        }
        let redo = self.dir.join(REDO);
        crate::sources::write_atomic(&redo, &encode_redo(&items))?;
        write_in_place(&self.dir, &self.bases, &items)?;
        std::fs::remove_file(&redo).map_err(StoreError::io(&redo))?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// The shared random-access reader.
    pub fn reader(&self) -> Arc<LogReader> {
        self.reader.clone()
    }

    /// Reads the record at `offset` (it must have been flushed by [`Wal::sync`]).
    pub fn read(&self, offset: u64) -> Result<Vec<u8>> {
        self.reader.read(offset)
    }
}

impl LogReader {
    fn file(&self, base: u64) -> Result<Arc<File>> {
        let mut readers = self.files.lock();
        if let Some(f) = readers.get(&base) {
            return Ok(f.clone());
        }
        let path = segment_path(&self.dir, base);
        let f = Arc::new(File::open(&path).map_err(StoreError::io(&path))?);
        readers.insert(base, f.clone());
        Ok(f)
    }

    fn segment_of(&self, offset: u64) -> Option<u64> {
        let bases = self.bases.read();
        let i = bases.partition_point(|b| *b <= offset);
        i.checked_sub(1).map(|i| bases[i])
    }

    /// Reads the record at `offset` (it must have been flushed by [`Wal::sync`]).
    pub fn read(&self, offset: u64) -> Result<Vec<u8>> {
        let base = self.segment_of(offset).ok_or_else(|| StoreError::Corrupt {
            path: self.dir.clone(),
            reason: format!("offset {offset} is before the log"),
        })?;
        // The segment's path is built only for an error (not per read).
        let path = || segment_path(&self.dir, base);
        let file = self.file(base)?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, offset - base)
            .map_err(|e| StoreError::io(path())(e))?;
        let (len, crc) = decode_header(&header);
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, offset - base + HEADER)
            .map_err(|e| StoreError::io(path())(e))?;
        if len > MAX_RECORD || crc32fast::hash(&payload) != crc {
            return Err(StoreError::Corrupt {
                path: path(),
                reason: format!("bad record at {offset}"),
            });
        }
        Ok(payload)
    }
}

impl Wal {
    /// Calls `f(offset, payload)` for every record from `from` to the end, in order.
    pub fn replay(&self, from: u64, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        for (i, &base) in self.bases.iter().enumerate() {
            let next = self.bases.get(i + 1).copied().unwrap_or(u64::MAX);
            if next <= from {
                continue;
            }
            let path = segment_path(&self.dir, base);
            let limit = if base == self.active_base {
                self.active_len
            } else {
                u64::MAX
            };
            let mut file = File::open(&path).map_err(StoreError::io(&path))?;
            let mut pos = from.saturating_sub(base);
            file.seek(SeekFrom::Start(pos))
                .map_err(StoreError::io(&path))?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            let mut payload = Vec::new();
            while pos < limit {
                let mut header = [0u8; HEADER as usize];
                match r.read_exact(&mut header) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(StoreError::io(&path)(e)),
                }
                let (len, crc) = decode_header(&header);
                if len > MAX_RECORD {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: format!("bad length at {}", base + pos),
                    });
                }
                payload.resize(len as usize, 0);
                r.read_exact(&mut payload).map_err(StoreError::io(&path))?;
                if crc32fast::hash(&payload) != crc {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: format!("bad checksum at {}", base + pos),
                    });
                }
                f(base + pos, &payload)?;
                pos += HEADER + len as u64;
            }
        }
        Ok(())
    }
}

fn decode_header(h: &[u8; 8]) -> (u32, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

/// Length of the valid prefix of a segment.
fn scan_valid(file: &mut File, path: &Path) -> Result<u64> {
    file.seek(SeekFrom::Start(0))
        .map_err(StoreError::io(path))?;
    let mut r = BufReader::with_capacity(1 << 20, &*file);
    let mut pos = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER as usize];
        if r.read_exact(&mut header).is_err() {
            return Ok(pos);
        }
        let (len, crc) = decode_header(&header);
        if len > MAX_RECORD {
            return Ok(pos);
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok(pos);
        }
        pos += HEADER + len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_replay_and_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), 64).expect("open");
        let offsets: Vec<u64> = (0..20)
            .map(|i| {
                wal.append(format!("record {i}").as_bytes())
                    .expect("append")
            })
            .collect();
        wal.sync().expect("sync");
        assert!(wal.bases.len() > 1, "rolled into several segments");
        assert_eq!(wal.read(offsets[7]).expect("read"), b"record 7");
        let mut seen = Vec::new();
        wal.replay(offsets[5], |_, p| {
            seen.push(String::from_utf8_lossy(p).to_string());
            Ok(())
        })
        .expect("replay");
        assert_eq!(seen.len(), 15);
        assert_eq!(seen[0], "record 5");
        drop(wal);
        let (wal, cut) = Wal::open(dir.path(), 64).expect("reopen");
        assert_eq!(cut, 0);
        assert_eq!(wal.read(offsets[19]).expect("read"), b"record 19");
    }

    #[test]
    fn an_overwrite_a_crash_interrupted_is_finished_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).expect("open");
        let a = wal.append(b"first record").expect("append");
        let b = wal.append(b"second record").expect("append");
        let c = wal.append(b"third record").expect("append");
        wal.sync().expect("sync");
        wal.overwrite(vec![(a, b"FIRST RECORD".to_vec())])
            .expect("overwrite");
        assert!(!dir.path().join(REDO).exists(), "the redo file is removed");
        drop(wal);
        // A crash mid-overwrite: the redo file is durable, the record half written.
        let items = vec![(b, b"SECOND RECORD".to_vec())];
        std::fs::write(dir.path().join(REDO), encode_redo(&items)).expect("redo");
        let seg = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 0))
            .expect("segment");
        seg.write_all_at(b"SECO", b + HEADER).expect("torn write");
        drop(seg);
        let (wal, cut) = Wal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            cut, 0,
            "the half-written record is not taken for a torn tail"
        );
        assert_eq!(wal.read(a).expect("a"), b"FIRST RECORD");
        assert_eq!(wal.read(b).expect("b"), b"SECOND RECORD");
        assert_eq!(wal.read(c).expect("c"), b"third record");
        assert!(!dir.path().join(REDO).exists());
        drop(wal);
        // A redo file cut short (the crash came while writing it): ignored, nothing touched.
        let mut partial = encode_redo(&[(c, b"THIRD RECORD".to_vec())]);
        partial.truncate(partial.len() - 3);
        std::fs::write(dir.path().join(REDO), partial).expect("partial redo");
        let (wal, _) = Wal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(wal.read(c).expect("c"), b"third record");
        assert!(!dir.path().join(REDO).exists());
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).expect("open");
        wal.append(b"kept").expect("append");
        wal.sync().expect("sync");
        let end = wal.end();
        drop(wal);
        let path = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open seg");
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'x'])
            .expect("write torn");
        drop(f);
        let (mut wal, cut) = Wal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(cut, 9);
        assert_eq!(wal.end(), end);
        let at = wal.append(b"next").expect("append");
        wal.sync().expect("sync");
        assert_eq!(wal.read(at).expect("read"), b"next");
    }
}
