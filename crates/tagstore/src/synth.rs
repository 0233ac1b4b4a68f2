//! Deterministic synthetic sets shared by the benchmarks and their Python peers
//! (`bench/bitmaps.py`), so that every implementation measures the same sets.
//!
//! Membership of id `i` in the set with seed `s` (all arithmetic on u64, wrapping):
//!
//! ```text
//! x = (i XOR s) * 0x9E3779B97F4A7C15
//! x = x XOR (x >> 32)
//! x = x * 0xD6E8FEB86659FD93
//! mix(i, s) = x >> 32
//! i ∈ set(s)  ⇔  mix(i, s) % 2 == 0
//! ```
//!
//! About half of the ids are members, spread uniformly, and sets with different seeds are
//! close to independent (|A ∩ B| ≈ N/4).

use roaring::RoaringBitmap;

/// The mixing function above.
pub fn mix(i: u64, seed: u64) -> u64 {
    let mut x = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 32;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x >> 32
}

/// True when `i` is a member of the set with `seed`.
pub fn is_member(i: u64, seed: u64) -> bool {
    mix(i, seed).is_multiple_of(2)
}

/// The set with `seed` over ids `0..n` (`n` ≤ 2^32).
pub fn half_set(n: u64, seed: u64) -> RoaringBitmap {
    let n = n.min(1 << 32);
    let mut bytes = vec![0u8; n.div_ceil(8) as usize];
    for (byte_index, byte) in bytes.iter_mut().enumerate() {
        let base = byte_index as u64 * 8;
        let mut b = 0u8;
        for bit in 0..8u64 {
            let i = base + bit;
            if i < n && is_member(i, seed) {
                b |= 1 << bit;
            }
        }
        *byte = b;
    }
    if bytes.is_empty() {
        return RoaringBitmap::new();
    }
    RoaringBitmap::from_lsb0_bytes(0, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_half_and_independent() {
        let n = 1 << 20;
        let a = half_set(n, 1);
        let b = half_set(n, 2);
        let frac = |x: u64, d: u64| x as f64 / d as f64;
        assert!((frac(a.len(), n) - 0.5).abs() < 0.01, "{}", a.len());
        assert!((frac(a.intersection_len(&b), n) - 0.25).abs() < 0.01);
        assert_eq!(a.contains(7), is_member(7, 1));
        assert_eq!(
            half_set(10, 1).iter().collect::<Vec<_>>(),
            (0..10)
                .filter(|&i| is_member(i, 1))
                .map(|i| i as u32)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn mix_is_pinned() {
        // Pinned so the Python peers can check they compute the same function.
        let got: Vec<u64> = (0..4).map(|i| mix(i, 1)).collect();
        assert_eq!(got, PINNED.to_vec());
    }

    const PINNED: [u64; 4] = [402_360_814, 0, 3_889_769_190, 3_382_515_274];
}
