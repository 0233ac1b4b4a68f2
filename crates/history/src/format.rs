//! The snapshot file format (integers little-endian):
//!
//! ```text
//! magic "PHST" | version u16 (=1) | kind u8 | 0u8 | name_len u32 | name | date (10 bytes, YYYY-MM-DD)
//! | slot_count u32 | slots … | crc32 u32
//! slot := key_len u32 | key | type u8 | body
//!   type 0 bitmap: len u64 | Roaring portable serialization
//!   type 1 same:   date (10 bytes)  — the data is the same slot of that date's file
//!   type 2 xor:    date (10 bytes) | len u64 | Roaring — the data is (that date's bitmap) XOR this
//!   type 3 bytes:  len u64 | bytes
//! ```
//!
//! The CRC-32 (IEEE) covers every byte before it. Kinds: 0 universe (slot `""`), 1 bool (slot
//! `""`: the ids where true), 2 enum (one slot per value), 3 numeric (slot `ids`: a bitmap,
//! slot `values`: encoding u8 then one value per id in id order, 1 = i32, 0 = f64).
//!
//! A `same` slot points to a file whose slot holds the data (type 0, 2 or 3); a `xor` slot's
//! date holds a type 0 slot. So reading any value touches at most three files.

use std::path::Path;

use roaring::RoaringBitmap;

use crate::date::{format_day, parse_day, Day};
use crate::error::HistoryError;

const MAGIC: &[u8; 4] = b"PHST";
const VERSION: u16 = 1;

/// Kind of a snapshot file.
pub(crate) const KIND_UNIVERSE: u8 = 0;
pub(crate) const KIND_BOOL: u8 = 1;
pub(crate) const KIND_ENUM: u8 = 2;
pub(crate) const KIND_NUMERIC: u8 = 3;

/// One slot's body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot {
    Bitmap(RoaringBitmap),
    Same(Day),
    Xor(Day, RoaringBitmap),
    Bytes(Vec<u8>),
}

impl Slot {
    /// The date this slot depends on, if any.
    pub(crate) fn reference(&self) -> Option<Day> {
        match self {
            Slot::Same(d) | Slot::Xor(d, _) => Some(*d),
            _ => None,
        }
    }
}

/// A decoded file (references unresolved).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawFile {
    pub(crate) kind: u8,
    pub(crate) name: String,
    pub(crate) date: Day,
    pub(crate) slots: Vec<(String, Slot)>,
}

impl RawFile {
    pub(crate) fn slot(&self, key: &str) -> Option<&Slot> {
        self.slots.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_bitmap(out: &mut Vec<u8>, b: &RoaringBitmap) {
    out.extend_from_slice(&(b.serialized_size() as u64).to_le_bytes());
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut *out);
}

pub(crate) fn encode(f: &RawFile) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(f.kind);
    out.push(0);
    put_str(&mut out, &f.name);
    out.extend_from_slice(format_day(f.date).as_bytes());
    out.extend_from_slice(&(f.slots.len() as u32).to_le_bytes());
    for (k, s) in &f.slots {
        put_str(&mut out, k);
        match s {
            Slot::Bitmap(b) => {
                out.push(0);
                put_bitmap(&mut out, b);
            }
            Slot::Same(d) => {
                out.push(1);
                out.extend_from_slice(format_day(*d).as_bytes());
            }
            Slot::Xor(d, b) => {
                out.push(2);
                out.extend_from_slice(format_day(*d).as_bytes());
                put_bitmap(&mut out, b);
            }
            Slot::Bytes(v) => {
                out.push(3);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, reason: impl Into<String>) -> HistoryError {
        HistoryError::corrupt(self.path, reason)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HistoryError> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.corrupt(format!("truncated: need {n} bytes at offset {}", self.pos))),
        }
    }

    fn u8(&mut self) -> Result<u8, HistoryError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, HistoryError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn len(&mut self) -> Result<usize, HistoryError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        let n = u64::from_le_bytes(a);
        usize::try_from(n).map_err(|_| self.corrupt(format!("length {n} too large")))
    }

    fn string(&mut self) -> Result<String, HistoryError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.corrupt("a name or value is not UTF-8"))
    }

    fn day(&mut self) -> Result<Day, HistoryError> {
        let s = self.take(10)?;
        std::str::from_utf8(s)
            .ok()
            .and_then(parse_day)
            .ok_or_else(|| self.corrupt("bad date"))
    }

    fn bitmap(&mut self) -> Result<RoaringBitmap, HistoryError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        RoaringBitmap::deserialize_from(bytes).map_err(|e| self.corrupt(format!("bad bitmap: {e}")))
    }
}

pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<RawFile, HistoryError> {
    if bytes.len() < 16 {
        return Err(HistoryError::corrupt(
            path,
            format!("truncated: {} bytes", bytes.len()),
        ));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(trailer);
    let (stored, actual) = (u32::from_le_bytes(crc), crc32fast::hash(body));
    if stored != actual {
        return Err(HistoryError::corrupt(
            path,
            format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
        ));
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        path,
    };
    if r.take(4)? != MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    let mut v = [0u8; 2];
    v.copy_from_slice(r.take(2)?);
    let version = u16::from_le_bytes(v);
    if version != VERSION {
        return Err(r.corrupt(format!("unsupported format version {version}")));
    }
    let kind = r.u8()?;
    if kind > KIND_NUMERIC {
        return Err(r.corrupt(format!("unknown kind {kind}")));
    }
    let _reserved = r.u8()?;
    let name = r.string()?;
    let date = r.day()?;
    let n = r.u32()?;
    let mut slots = Vec::new();
    for _ in 0..n {
        let key = r.string()?;
        let slot = match r.u8()? {
            0 => Slot::Bitmap(r.bitmap()?),
            1 => Slot::Same(r.day()?),
            2 => {
                let d = r.day()?;
                Slot::Xor(d, r.bitmap()?)
            }
            3 => {
                let n = r.len()?;
                Slot::Bytes(r.take(n)?.to_vec())
            }
            other => return Err(r.corrupt(format!("unknown slot type {other}"))),
        };
        slots.push((key, slot));
    }
    if r.pos != body.len() {
        return Err(r.corrupt(format!("{} trailing bytes", body.len() - r.pos)));
    }
    Ok(RawFile {
        kind,
        name,
        date,
        slots,
    })
}

/// Numeric values in id order → bytes (i32 when every value is an integer in range).
pub(crate) fn encode_values(values: &[f64]) -> Vec<u8> {
    let ints = values
        .iter()
        .all(|&x| x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX));
    let mut out = Vec::with_capacity(1 + values.len() * if ints { 4 } else { 8 });
    if ints {
        out.push(1);
        for &x in values {
            out.extend_from_slice(&(x as i32).to_le_bytes());
        }
    } else {
        out.push(0);
        for &x in values {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

pub(crate) fn decode_values(path: &Path, bytes: &[u8], n: usize) -> Result<Vec<f64>, HistoryError> {
    let Some((&enc, rest)) = bytes.split_first() else {
        return Err(HistoryError::corrupt(path, "empty numeric values"));
    };
    let width = match enc {
        0 => 8,
        1 => 4,
        other => {
            return Err(HistoryError::corrupt(
                path,
                format!("unknown value encoding {other}"),
            ))
        }
    };
    if rest.len() != n.saturating_mul(width) {
        return Err(HistoryError::corrupt(
            path,
            format!("{} value bytes for {n} ids", rest.len()),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for c in rest.chunks_exact(width) {
        let x = if width == 8 {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a)
        } else {
            let mut a = [0u8; 4];
            a.copy_from_slice(c);
            f64::from(i32::from_le_bytes(a))
        };
        out.push(x);
    }
    Ok(out)
}
