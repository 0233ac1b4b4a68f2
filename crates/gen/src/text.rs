//! Fast, allocation-free writing of numbers, dates, CSV fields and JSON strings into byte
//! buffers, plus the identifier bijections that make generated ids unique and reproducible.
//!
//! Time is kept as local seconds in Asia/Shanghai (UTC+8, no daylight saving since 1991), i.e.
//! `unix_seconds + 8 h`, so calendar fields come from plain integer arithmetic.

/// Seconds of UTC offset of Asia/Shanghai.
pub(crate) const SHANGHAI: i64 = 8 * 3600;
/// Seconds per day.
pub(crate) const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day of week, 0 = Monday.
pub(crate) fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

#[inline]
fn two(buf: &mut Vec<u8>, n: u32) {
    buf.push(b'0' + (n / 10) as u8);
    buf.push(b'0' + (n % 10) as u8);
}

#[inline]
fn four(buf: &mut Vec<u8>, n: i64) {
    let n = n.clamp(0, 9999) as u32;
    two(buf, n / 100);
    two(buf, n % 100);
}

/// `YYYY-MM-DD` of a day number.
pub(crate) fn push_date(buf: &mut Vec<u8>, day: i64) {
    let (y, m, d) = civil_from_days(day);
    four(buf, y);
    buf.push(b'-');
    two(buf, m);
    buf.push(b'-');
    two(buf, d);
}

/// `YYYY-MM` of a day number.
pub(crate) fn month_label(day: i64) -> String {
    let (y, m, _) = civil_from_days(day);
    format!("{y:04}-{m:02}")
}

/// `YYYY-MM-DD HH:MM:SS` of local seconds.
pub(crate) fn push_local(buf: &mut Vec<u8>, local: i64) {
    let day = local.div_euclid(DAY);
    let s = local.rem_euclid(DAY) as u32;
    push_date(buf, day);
    buf.push(b' ');
    two(buf, s / 3600);
    buf.push(b':');
    two(buf, s / 60 % 60);
    buf.push(b':');
    two(buf, s % 60);
}

/// ISO-8601 UTC with milliseconds (`2026-06-17T16:03:12.345Z`) of local seconds plus millis,
/// as Segment SDKs send it.
pub(crate) fn push_iso_utc(buf: &mut Vec<u8>, local: i64, millis: u32) {
    let utc = local - SHANGHAI;
    let day = utc.div_euclid(DAY);
    let s = utc.rem_euclid(DAY) as u32;
    push_date(buf, day);
    buf.push(b'T');
    two(buf, s / 3600);
    buf.push(b':');
    two(buf, s / 60 % 60);
    buf.push(b':');
    two(buf, s % 60);
    buf.push(b'.');
    let ms = millis % 1000;
    buf.push(b'0' + (ms / 100) as u8);
    two(buf, ms % 100);
    buf.push(b'Z');
}

/// Decimal digits of an unsigned number.
#[inline]
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Decimal digits, zero-padded to `width`.
pub(crate) fn push_padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut tmp = Vec::with_capacity(20);
    push_u64(&mut tmp, n);
    for _ in tmp.len()..width {
        buf.push(b'0');
    }
    buf.extend_from_slice(&tmp);
}

/// A money amount in fen as yuan with two decimals (`590.00`).
pub(crate) fn push_money(buf: &mut Vec<u8>, fen: i64) {
    if fen < 0 {
        buf.push(b'-');
    }
    let f = fen.unsigned_abs();
    push_u64(buf, f / 100);
    buf.push(b'.');
    two(buf, (f % 100) as u32);
}

/// A CSV field, quoted when it holds a delimiter, quote or line break.
pub(crate) fn push_csv(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        buf.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A JSON string literal.
pub(crate) fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0..=0x1f => {
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 15) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` lower-case hex digits of `v` (most significant first).
pub(crate) fn push_hex(buf: &mut Vec<u8>, v: u64, n: usize) {
    for i in (0..n).rev() {
        buf.push(HEX[((v >> (4 * i)) & 15) as usize]);
    }
}

/// A version-4-shaped UUID whose first 64 bits are `hi` in full (so distinct `hi` give
/// distinct UUIDs) and the rest from `lo`.
pub(crate) fn push_uuid(buf: &mut Vec<u8>, hi: u64, lo: u64, upper: bool) {
    let start = buf.len();
    push_hex(buf, hi >> 32, 8);
    buf.push(b'-');
    push_hex(buf, (hi >> 16) & 0xffff, 4);
    buf.push(b'-');
    buf.push(b'4');
    push_hex(buf, lo & 0xfff, 3);
    buf.push(b'-');
    buf.push(HEX[(8 + ((lo >> 12) & 3)) as usize]);
    push_hex(buf, (lo >> 14) & 0xfff, 3);
    buf.push(b'-');
    push_hex(buf, hi & 0xffff, 4);
    push_hex(buf, (lo >> 26) & 0xffff_ffff, 8);
    if upper {
        buf[start..].make_ascii_uppercase();
    }
}

/// `n` base64url characters of `v` (6 bits each, most significant first).
pub(crate) fn push_b64(buf: &mut Vec<u8>, v: u64, n: usize) {
    for i in (0..n).rev() {
        buf.push(B64[((v >> ((6 * i) % 64)) & 63) as usize]);
    }
}

/// `n` base-36 digits of `v`.
pub(crate) fn push_b36(buf: &mut Vec<u8>, mut v: u64, n: usize) {
    let start = buf.len();
    for _ in 0..n {
        buf.push(B36[(v % 36) as usize]);
        v /= 36;
    }
    buf[start..].reverse();
}

/// A bijective 64-bit mixer (the SplitMix64 finaliser).
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A keyed permutation of `0..m`: `x ↦ (a·x + b) mod m` with `gcd(a, m) = 1`. Distinct inputs
/// below `m` give distinct outputs, which is how generated phones, member ids, nicks and
/// emails stay unique across millions of people without any shared state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Affine {
    a: u64,
    b: u64,
    m: u64,
}

impl Affine {
    /// A permutation of `0..m` keyed by `seed` and `salt`.
    pub(crate) fn new(seed: u64, salt: u64, m: u64) -> Self {
        let mut a = mix64(seed ^ mix64(salt)) % m;
        // Keep the stride large so neighbours look unrelated.
        a = a.max(m / 3) | 1;
        while gcd(a, m) != 1 {
            a = (a + 2) % m;
        }
        let b = mix64(seed.rotate_left(17) ^ mix64(salt ^ 0x5bd1_e995)) % m;
        Self { a, b, m }
    }

    /// The image of `x` (which must be below `m`).
    pub(crate) fn apply(&self, x: u64) -> u64 {
        ((self.a as u128 * (x % self.m) as u128 + self.b as u128) % self.m as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for day in [-1000, 0, 19_000, 20_393, 20_500, 30_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(days_from_civil(2026, 11, 1), 20_758);
        assert_eq!(
            weekday(days_from_civil(2026, 11, 1)),
            6,
            "2026-11-01 is a Sunday"
        );
    }

    #[test]
    fn formats() {
        let mut b = Vec::new();
        push_local(&mut b, days_from_civil(2026, 6, 18) * DAY + 3600 + 61);
        assert_eq!(b, b"2026-06-18 01:01:01");
        b.clear();
        push_iso_utc(&mut b, days_from_civil(2026, 6, 18) * DAY + 3600, 7);
        assert_eq!(b, b"2026-06-17T17:00:00.007Z");
        b.clear();
        push_money(&mut b, 59_005);
        assert_eq!(b, b"590.05");
        b.clear();
        push_csv(&mut b, "a,\"b\"");
        assert_eq!(b, b"\"a,\"\"b\"\"\"");
        b.clear();
        push_uuid(&mut b, 0x0123_4567_89ab_cdef, u64::MAX, false);
        assert_eq!(b.len(), 36);
        assert_eq!(b[14], b'4');
    }

    #[test]
    fn affine_is_a_permutation() {
        let p = Affine::new(7, 1, 1000);
        let mut seen = [false; 1000];
        for x in 0..1000 {
            let y = p.apply(x) as usize;
            assert!(!seen[y]);
            seen[y] = true;
        }
    }
}
