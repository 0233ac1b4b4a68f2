//! Byte inputs (a file or an upload held in memory) and streaming readers over them:
//! UTF-8 detection, BOM skipping, GBK decoding and a byte counter for progress.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ImportError;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// A file, streamed.
    File(PathBuf),
    /// An upload already in memory.
    Bytes(Bytes),
}

/// Boxed byte stream.
pub(crate) type Stream = Box<dyn Read + Send>;

impl Input {
    /// Name used in error messages.
    pub(crate) fn origin(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Bytes(_) => "upload".into(),
        }
    }

    /// Path used in I/O errors.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::File(p) => p,
            Self::Bytes(_) => Path::new("upload"),
        }
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> Result<u64, ImportError> {
        match self {
            Self::File(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| ImportError::io("open", p, e)),
            Self::Bytes(b) => Ok(b.len() as u64),
        }
    }

    /// A fresh stream over the whole input.
    pub(crate) fn open(&self) -> Result<Stream, ImportError> {
        match self {
            Self::File(p) => match std::fs::File::open(p) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) => Err(ImportError::io("open", p, e)),
            },
            Self::Bytes(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
        }
    }

    /// Whether the whole input is valid UTF-8. A file is read once, in chunks, for this.
    pub(crate) fn is_utf8(&self) -> Result<bool, ImportError> {
        match self {
            Self::Bytes(b) => Ok(std::str::from_utf8(b).is_ok()),
            Self::File(p) => is_utf8(self.open()?).map_err(|e| ImportError::io("read", p, e)),
        }
    }
}

fn read_retry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Validates UTF-8 over a stream without holding it in memory.
fn is_utf8(mut r: impl Read) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry = 0; // bytes of a sequence cut by the chunk boundary (at most 3)
    loop {
        let n = read_retry(&mut r, &mut buf[carry..])?;
        if n == 0 {
            return Ok(carry == 0);
        }
        let end = carry + n;
        match std::str::from_utf8(&buf[..end]) {
            Ok(_) => carry = 0,
            Err(e) if e.error_len().is_none() => {
                buf.copy_within(e.valid_up_to()..end, 0);
                carry = end - e.valid_up_to();
            }
            Err(_) => return Ok(false),
        }
    }
}

/// Skips a leading UTF-8 byte-order mark.
pub(crate) fn skip_bom(mut r: Stream) -> io::Result<Stream> {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match read_retry(&mut r, &mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let keep = if &head[..n] == BOM {
        Vec::new()
    } else {
        head[..n].to_vec()
    };
    Ok(Box::new(io::Cursor::new(keep).chain(r)))
}

/// Counts the bytes read from the underlying input, for progress reporting.
pub(crate) struct Counting {
    inner: Stream,
    count: Arc<AtomicU64>,
}

impl Counting {
    pub(crate) fn new(inner: Stream, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decodes a stream to UTF-8 with `encoding_rs`, chunk by chunk. Malformed sequences become
/// U+FFFD. A UTF-8 byte-order mark switches the decoder to UTF-8 (and is removed).
pub(crate) struct Decode {
    inner: Stream,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    eof: bool,
    output: Vec<u8>,
    out_start: usize,
    out_end: usize,
    finished: bool,
}

impl Decode {
    pub(crate) fn new(inner: Stream, encoding: &'static encoding_rs::Encoding) -> Self {
        Self {
            inner,
            decoder: encoding.new_decoder(),
            input: vec![0; 32 * 1024],
            in_start: 0,
            in_end: 0,
            eof: false,
            output: vec![0; 64 * 1024],
            out_start: 0,
            out_end: 0,
            finished: false,
        }
    }
}

impl Read for Decode {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = buf.len().min(self.out_end - self.out_start);
                buf[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            if self.in_start == self.in_end && !self.eof {
                let n = read_retry(&mut self.inner, &mut self.input)?;
                self.in_start = 0;
                self.in_end = n;
                self.eof = n == 0;
            }
            let (result, read, written, _) = self.decoder.decode_to_utf8(
                &self.input[self.in_start..self.in_end],
                &mut self.output,
                self.eof,
            );
            self.in_start += read;
            self.out_start = 0;
            self.out_end = written;
            if self.eof && result == encoding_rs::CoderResult::InputEmpty {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(bytes: &[u8]) -> Stream {
        Box::new(io::Cursor::new(bytes.to_vec()))
    }

    /// Hands out one byte per read, to cut every multi-byte sequence.
    struct Trickle(io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let one = buf.len().min(1);
            self.0.read(&mut buf[..one])
        }
    }

    #[test]
    fn utf8_check_spans_chunk_boundaries() {
        let text = "姓名,手机\n".repeat(20_000);
        assert!(is_utf8(io::Cursor::new(text.as_bytes())).expect("read"));
        assert!(is_utf8(Trickle(io::Cursor::new(text.clone().into_bytes()))).expect("read"));
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        assert!(!is_utf8(io::Cursor::new(gbk.into_owned())).expect("read"));
        assert!(
            !is_utf8(io::Cursor::new(b"ok\xE5\xA7".to_vec())).expect("read"),
            "cut at end"
        );
    }

    #[test]
    fn gbk_decodes_across_chunks() {
        let text = "张三,13800001234\n".repeat(10_000);
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        let inner: Stream = Box::new(Trickle(io::Cursor::new(gbk.into_owned())));
        let mut out = String::new();
        Decode::new(inner, encoding_rs::GBK)
            .read_to_string(&mut out)
            .expect("decode");
        assert_eq!(out, text);
    }

    #[test]
    fn bom_is_skipped_only_when_present() {
        let mut out = String::new();
        skip_bom(stream(b"\xEF\xBB\xBFa,b"))
            .expect("read")
            .read_to_string(&mut out)
            .expect("r");
        assert_eq!(out, "a,b");
        out.clear();
        skip_bom(stream(b"ab"))
            .expect("read")
            .read_to_string(&mut out)
            .expect("r");
        assert_eq!(out, "ab");
    }
}
