"""Bitmap benchmark peers for crates/tagstore/benches/bitmaps.rs.

Builds the same sets as the Rust bench (portrait_tagstore::synth) and times
  * |A ∩ B| over ids 0..100M      (pyroaring intersection_cardinality, chDB bitmapAndCardinality)
  * |A ∩ B − C| over ids 0..1B    (pyroaring, chDB bitmapAndnot + bitmapCardinality)

Membership (u64 arithmetic, wrapping):
    x = (i XOR s) * 0x9E3779B97F4A7C15
    x = x XOR (x >> 32)
    x = x * 0xD6E8FEB86659FD93
    i in set(s)  <=>  (x >> 32) % 2 == 0        seeds: A=1, B=2, C=3

Run through bench/bitmaps.sh (installs pyroaring, chdb and numpy into target/bench-venv).
"""

import argparse
import statistics
import struct
import sys
import time

import numpy as np
import pyroaring

K1 = 0x9E3779B97F4A7C15
K2 = 0xD6E8FEB86659FD93
CHUNK = 1 << 24  # ids per numpy chunk (a multiple of 2^16)


def mix_py(i, s):
    m = (1 << 64) - 1
    x = ((i ^ s) * K1) & m
    x ^= x >> 32
    x = (x * K2) & m
    return x >> 32


def member_mask(start, end, seed):
    i = np.arange(start, end, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (i ^ np.uint64(seed)) * np.uint64(K1)
        x ^= x >> np.uint64(32)
        x *= np.uint64(K2)
    return ((x >> np.uint64(32)) & np.uint64(1)) == 0


def half_set(n, seed):
    """The set over 0..n as a pyroaring BitMap.

    The bitmap is assembled as Roaring's portable serialization straight from numpy's packed
    bits (bitmap containers; array containers for a sparse last chunk), so there is no per-id
    Python work, and checked against pyroaring's own count.
    """
    keys, cards, words = [], [], []
    for start in range(0, n, CHUNK):
        end = min(n, start + CHUNK)
        mask = member_mask(start, end, seed)
        packed = np.packbits(mask, bitorder="little")
        pad = (-len(packed)) % 8192
        if pad:
            packed = np.concatenate([packed, np.zeros(pad, dtype=np.uint8)])
        per = packed.reshape(-1, 8192)
        counts = np.add.reduceat(mask, np.arange(0, len(mask), 1 << 16), dtype=np.int64)
        for k, c in enumerate(counts):
            c = int(c)
            if c == 0:
                continue
            keys.append((start >> 16) + k)
            cards.append(c)
            if c > 4096:
                words.append(per[k].tobytes())
            else:  # array container: sorted 16-bit lows
                lows = np.flatnonzero(mask[k << 16 : (k + 1) << 16]).astype("<u2")
                words.append(lows.tobytes())
    size = len(keys)
    header = struct.pack("<II", 12346, size)
    desc = b"".join(struct.pack("<HH", k, c - 1) for k, c in zip(keys, cards))
    offsets, at = [], 8 + 4 * size + 4 * size
    for w in words:
        offsets.append(struct.pack("<I", at))
        at += len(w)
    offsets = b"".join(offsets)
    bm = pyroaring.BitMap.deserialize(header + desc + offsets + b"".join(words))
    assert len(bm) == sum(cards)
    return bm


def timeit(f, repeat):
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = f()
        times.append((time.perf_counter() - t) * 1000)
    return result, statistics.median(times), min(times)


def sql_member(seed):
    x1 = f"(bitXor(number, {seed}) * {K1})"
    x2 = f"(bitXor({x1}, bitShiftRight({x1}, 32)) * {K2})"
    return f"bitAnd(bitShiftRight({x2}, 32), 1) = 0"


def chdb_case(n, seeds, query, repeat):
    from chdb import session

    s = session.Session()
    cols = ", ".join(
        f"groupBitmapStateIf(toUInt32(number), {sql_member(seed)}) AS {name}" for name, seed in seeds
    )
    t = time.perf_counter()
    s.query(f"CREATE TABLE bm ENGINE = Memory AS SELECT {cols} FROM numbers({n}) SETTINGS max_threads = 2")
    build = time.perf_counter() - t
    q = f"SELECT {query} FROM bm SETTINGS max_threads = 2"
    result, med, best = timeit(lambda: int(str(s.query(q, "CSV")).strip()), repeat)
    s.close()
    return result, med, best, build


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n100m", type=int, default=100_000_000)
    ap.add_argument("--n1b", type=int, default=1_000_000_000)
    ap.add_argument("--skip-1b", action="store_true")
    ap.add_argument("--skip-chdb-1b", action="store_true")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    import chdb

    # The numpy and SQL formulas must agree with the reference (and with the Rust pin).
    assert [mix_py(i, 1) for i in range(4)] == [402360814, 0, 3889769190, 3382515274]
    small = member_mask(0, 5000, 2)
    assert list(small) == [mix_py(i, 2) % 2 == 0 for i in range(5000)]
    ref = sum(1 for i in range(5000) if mix_py(i, 1) % 2 == 0 and mix_py(i, 2) % 2 == 0)
    got = chdb_case(5000, [("a", 1), ("b", 2)], "bitmapAndCardinality(a, b)", 1)[0]
    assert got == ref, (got, ref)

    rows = []
    print(f"pyroaring {pyroaring.__version__}, chdb {chdb.__version__}, numpy {np.__version__}", flush=True)

    n = args.n100m
    t = time.perf_counter()
    a, b = half_set(n, 1), half_set(n, 2)
    build = time.perf_counter() - t
    r, med, best = timeit(lambda: a.intersection_cardinality(b), args.repeat)
    rows.append((f"|A∩B|, N={n:,}", "pyroaring", r, med, best, build))
    del a, b
    r, med, best, build = chdb_case(n, [("a", 1), ("b", 2)], "bitmapAndCardinality(a, b)", args.repeat)
    rows.append((f"|A∩B|, N={n:,}", "chDB", r, med, best, build))
    print(rows[-2], rows[-1], flush=True)

    if not args.skip_1b:
        n = args.n1b
        t = time.perf_counter()
        a, b, c = half_set(n, 1), half_set(n, 2), half_set(n, 3)
        build = time.perf_counter() - t
        r, med, best = timeit(lambda: (a & b).difference_cardinality(c), args.repeat)
        rows.append((f"|A∩B−C|, N={n:,}", "pyroaring", r, med, best, build))
        print(rows[-1], flush=True)
        del a, b, c
        if not args.skip_chdb_1b:
            q = "bitmapCardinality(bitmapAndnot(bitmapAnd(a, b), c))"
            r, med, best, build = chdb_case(n, [("a", 1), ("b", 2), ("c", 3)], q, args.repeat)
            rows.append((f"|A∩B−C|, N={n:,}", "chDB", r, med, best, build))

    print()
    print(f"{'case':<26} {'impl':<10} {'result':>12} {'median ms':>10} {'min ms':>9} {'build s':>8}")
    for case, impl, r, med, best, build in rows:
        print(f"{case:<26} {impl:<10} {r:>12,} {med:>10.2f} {best:>9.2f} {build:>8.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
