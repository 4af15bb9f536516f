// Block-set bitmaps: bit i of the set is bit (i & 7) of byte (i >> 3), so a bitmap read as
// little-endian u64 words has bit i at bit (i & 63) of word (i >> 6). Buffers handed to
// these functions are padded to a multiple of 16 bytes and their padding bits are zero.

/** dst = a | b over `bytes` bytes (a multiple of 16). dst may alias a or b. */
export function bitmapOr(dst: usize, a: usize, b: usize, bytes: usize): void {
  // Four vectors per step, then the rest one at a time.
  let i: usize = 0;
  for (; i + 64 <= bytes; i += 64) {
    v128.store(dst + i, v128.or(v128.load(a + i), v128.load(b + i)));
    v128.store(dst + i, v128.or(v128.load(a + i, 16), v128.load(b + i, 16)), 16);
    v128.store(dst + i, v128.or(v128.load(a + i, 32), v128.load(b + i, 32)), 32);
    v128.store(dst + i, v128.or(v128.load(a + i, 48), v128.load(b + i, 48)), 48);
  }
  for (; i < bytes; i += 16) {
    v128.store(dst + i, v128.or(v128.load(a + i), v128.load(b + i)));
  }
}

/** dst = a & b over `bytes` bytes (a multiple of 16). dst may alias a or b. */
export function bitmapAnd(dst: usize, a: usize, b: usize, bytes: usize): void {
  // Four vectors per step, then the rest one at a time.
  let i: usize = 0;
  for (; i + 64 <= bytes; i += 64) {
    v128.store(dst + i, v128.and(v128.load(a + i), v128.load(b + i)));
    v128.store(dst + i, v128.and(v128.load(a + i, 16), v128.load(b + i, 16)), 16);
    v128.store(dst + i, v128.and(v128.load(a + i, 32), v128.load(b + i, 32)), 32);
    v128.store(dst + i, v128.and(v128.load(a + i, 48), v128.load(b + i, 48)), 48);
  }
  for (; i < bytes; i += 16) {
    v128.store(dst + i, v128.and(v128.load(a + i), v128.load(b + i)));
  }
}

/** dst = a & ~b over `bytes` bytes (a multiple of 16). dst may alias a or b. */
export function bitmapAndNot(dst: usize, a: usize, b: usize, bytes: usize): void {
  // Four vectors per step, then the rest one at a time.
  let i: usize = 0;
  for (; i + 64 <= bytes; i += 64) {
    v128.store(dst + i, v128.andnot(v128.load(a + i), v128.load(b + i)));
    v128.store(dst + i, v128.andnot(v128.load(a + i, 16), v128.load(b + i, 16)), 16);
    v128.store(dst + i, v128.andnot(v128.load(a + i, 32), v128.load(b + i, 32)), 32);
    v128.store(dst + i, v128.andnot(v128.load(a + i, 48), v128.load(b + i, 48)), 48);
  }
  for (; i < bytes; i += 16) {
    v128.store(dst + i, v128.andnot(v128.load(a + i), v128.load(b + i)));
  }
}

/** Number of set bits in `bytes` bytes (a multiple of 16). */
export function bitmapPopcount(ptr: usize, bytes: usize): u32 {
  let a: u64 = 0;
  let b: u64 = 0;
  let c: u64 = 0;
  let d: u64 = 0;
  let i: usize = 0;
  for (; i + 32 <= bytes; i += 32) {
    a += popcnt<u64>(load<u64>(ptr + i));
    b += popcnt<u64>(load<u64>(ptr + i, 8));
    c += popcnt<u64>(load<u64>(ptr + i, 16));
    d += popcnt<u64>(load<u64>(ptr + i, 24));
  }
  for (; i < bytes; i += 16) {
    a += popcnt<u64>(load<u64>(ptr + i));
    b += popcnt<u64>(load<u64>(ptr + i, 8));
  }
  return <u32> (a + b + c + d);
}

/** Number of bits set in both a and b, over `bytes` bytes (a multiple of 16). */
export function bitmapAndCount(a: usize, b: usize, bytes: usize): u32 {
  let x: u64 = 0;
  let y: u64 = 0;
  for (let i: usize = 0; i < bytes; i += 16) {
    x += popcnt<u64>(load<u64>(a + i) & load<u64>(b + i));
    y += popcnt<u64>(load<u64>(a + i, 8) & load<u64>(b + i, 8));
  }
  return <u32> (x + y);
}

/** Number of bits set in a and clear in b, over `bytes` bytes (a multiple of 16). */
export function bitmapAndNotCount(a: usize, b: usize, bytes: usize): u32 {
  let x: u64 = 0;
  let y: u64 = 0;
  for (let i: usize = 0; i < bytes; i += 16) {
    x += popcnt<u64>(load<u64>(a + i) & ~load<u64>(b + i));
    y += popcnt<u64>(load<u64>(a + i, 8) & ~load<u64>(b + i, 8));
  }
  return <u32> (x + y);
}

/** Number of bits that differ between a and b, over `bytes` bytes (a multiple of 16). */
export function bitmapXorCount(a: usize, b: usize, bytes: usize): u32 {
  let x: u64 = 0;
  let y: u64 = 0;
  for (let i: usize = 0; i < bytes; i += 16) {
    x += popcnt<u64>(load<u64>(a + i) ^ load<u64>(b + i));
    y += popcnt<u64>(load<u64>(a + i, 8) ^ load<u64>(b + i, 8));
  }
  return <u32> (x + y);
}

/** Index of the first set bit at or after `from`, or `nbits` when there is none. */
function nextSet(ptr: usize, nbits: u32, from: u32): u32 {
  if (from >= nbits) return nbits;
  let word = from >> 6;
  const words = (nbits + 63) >> 6;
  let w = load<u64>(ptr + (<usize> word << 3)) & (~(<u64> 0) << (from & 63));
  while (w == 0) {
    word++;
    if (word >= words) return nbits;
    // Skip 64 zero bytes at a time once 64-byte aligned (the loads stay within the words).
    while ((word & 7) == 0 && word + 8 <= words) {
      const at = ptr + (<usize> word << 3);
      const any = v128.or(
        v128.or(v128.load(at), v128.load(at, 16)),
        v128.or(v128.load(at, 32), v128.load(at, 48)),
      );
      if (v128.any_true(any)) break;
      word += 8;
    }
    if (word >= words) return nbits;
    w = load<u64>(ptr + (<usize> word << 3));
  }
  return min<u32>((word << 6) + <u32> ctz<u64>(w), nbits);
}

/** Index of the first clear bit at or after `from`, or `nbits` when there is none. */
function nextClear(ptr: usize, nbits: u32, from: u32): u32 {
  if (from >= nbits) return nbits;
  let word = from >> 6;
  const words = (nbits + 63) >> 6;
  let w = ~load<u64>(ptr + (<usize> word << 3)) & (~(<u64> 0) << (from & 63));
  while (w == 0) {
    word++;
    if (word >= words) return nbits;
    w = ~load<u64>(ptr + (<usize> word << 3));
  }
  return min<u32>((word << 6) + <u32> ctz<u64>(w), nbits);
}

/**
 * Writes up to `maxRuns` runs of set bits at or after bit `from` to `out`, as u32 pairs
 * [start, length]. Returns how many were written; when that equals `maxRuns`, call again
 * from the end of the last run.
 */
export function bitmapExtents(ptr: usize, nbits: u32, from: u32, out: usize, maxRuns: u32): u32 {
  let runs: u32 = 0;
  let pos = from;
  while (runs < maxRuns) {
    const start = nextSet(ptr, nbits, pos);
    if (start >= nbits) break;
    const end = nextClear(ptr, nbits, start);
    store<u32>(out + (<usize> runs << 3), start);
    store<u32>(out + (<usize> runs << 3), end - start, 4);
    runs++;
    pos = end;
  }
  return runs;
}

/** Sets (`value` true) or clears `len` bits starting at bit `start`. */
export function bitmapFillRange(ptr: usize, start: u32, len: u32, value: bool): void {
  let pos = start;
  const end = start + len;
  while (pos < end) {
    const bit = pos & 63;
    const span = min<u32>(64 - bit, end - pos);
    const mask: u64 = (span == 64 ? ~(<u64> 0) : ((<u64> 1 << span) - 1)) << bit;
    const at = ptr + (<usize> (pos >> 6) << 3);
    if (bit == 0 && span == 64) {
      // Whole words: fill bytes directly until the last partial word.
      const whole = (end - pos) >> 6;
      memory.fill(at, value ? 0xff : 0, <usize> whole << 3);
      pos += whole << 6;
      continue;
    }
    const w = load<u64>(at);
    store<u64>(at, value ? (w | mask) : (w & ~mask));
    pos += span;
  }
}
