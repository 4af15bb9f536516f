// The scan tracker's pre-filter: NH, the universal hash at the heart of UMAC, over whole
// blocks with 128-bit SIMD multiply-accumulate.
//
// NH as in RFC 4418 section 5.1 (UMAC's NH-32): the block, zero-padded to a multiple of 32
// bytes, is read as little-endian 32-bit words m and paired with key words k; each 32-byte
// stride s adds, for i in 0..3,
//     (m[8s+i] + k[8s+i] mod 2^32) * (m[8s+i+4] + k[8s+i+4] mod 2^32)      (64-bit product)
// to a sum mod 2^64. Two iterations with the key shifted by 16 bytes (the Toeplitz
// construction of RFC 4418 section 5.2) give 128 bits. Each iteration then adds the block's
// length in bits, as UMAC's L1-HASH does.
//
// Bound (Black, Halevi, Krawczyk, Krovetz, Rogaway, "UMAC: Fast and Secure Message
// Authentication", CRYPTO '99, section 3): for a uniformly random key, NH with 32-bit words
// collides on two distinct equal-length messages with probability at most 2^-32, and its
// Toeplitz extension with t iterations with probability at most 2^-32t: 2^-64 here.
//
// The key is one word per message word plus the 16-byte shift: KEY_SHIFT bytes more than the
// padded block. The words i and i+4 of a stride sit in the same lanes of the two v128 halves
// of the stride, so i64x2.extmul_{low,high}_i32x4_u compute the four products directly.

/** Bytes of one pre-filter value: two 64-bit NH sums, little-endian. */
export const PREFILTER_BYTES: u32 = 16;
/** Bytes the key is shifted by between the two iterations (RFC 4418 section 5.2). */
const KEY_SHIFT: usize = 16;
const STRIDE: usize = 32;

// The zero-padded last stride of a block whose length is not a multiple of STRIDE.
const TAIL = memory.data(<i32> STRIDE, 16);

/** Key bytes needed for blocks of up to `blockSize` bytes. */
export function prefilterKeyBytes(blockSize: usize): usize {
  return ((blockSize + STRIDE - 1) & ~(STRIDE - 1)) + KEY_SHIFT;
}

/**
 * NH of one block of `len` bytes at `ptr` under the key at `key`, written as 16 bytes at
 * `out`. The block is read in place; only a partial last stride is copied.
 */
function prefilterBlock(ptr: usize, len: usize, key: usize, out: usize): void {
  let acc0 = i64x2.splat(0);
  let acc1 = i64x2.splat(0);
  let k0 = v128.load(key);
  const full = ptr + (len & ~(STRIDE - 1));
  let p = ptr;
  let k = key;
  // Two strides per turn; k0 holds the key words at p (the previous turn loaded them).
  while (p + 2 * STRIDE <= full) {
    const m0 = v128.load(p);
    const m1 = v128.load(p, 16);
    const m2 = v128.load(p, 32);
    const m3 = v128.load(p, 48);
    const k1 = v128.load(k, 16);
    const k2 = v128.load(k, 32);
    const k3 = v128.load(k, 48);
    const k4 = v128.load(k, 64);
    let a = i32x4.add(m0, k0);
    let b = i32x4.add(m1, k1);
    acc0 = i64x2.add(acc0, i64x2.extmul_low_i32x4_u(a, b));
    acc0 = i64x2.add(acc0, i64x2.extmul_high_i32x4_u(a, b));
    a = i32x4.add(m0, k1);
    b = i32x4.add(m1, k2);
    acc1 = i64x2.add(acc1, i64x2.extmul_low_i32x4_u(a, b));
    acc1 = i64x2.add(acc1, i64x2.extmul_high_i32x4_u(a, b));
    a = i32x4.add(m2, k2);
    b = i32x4.add(m3, k3);
    acc0 = i64x2.add(acc0, i64x2.extmul_low_i32x4_u(a, b));
    acc0 = i64x2.add(acc0, i64x2.extmul_high_i32x4_u(a, b));
    a = i32x4.add(m2, k3);
    b = i32x4.add(m3, k4);
    acc1 = i64x2.add(acc1, i64x2.extmul_low_i32x4_u(a, b));
    acc1 = i64x2.add(acc1, i64x2.extmul_high_i32x4_u(a, b));
    k0 = k4;
    p += 2 * STRIDE;
    k += 2 * STRIDE;
  }
  // At most one whole stride and a partial one are left; the partial one is zero-padded.
  const end = ptr + len;
  while (p < end) {
    let src = p;
    if (end - p < STRIDE) {
      memory.fill(TAIL, 0, STRIDE);
      memory.copy(TAIL, p, end - p);
      src = TAIL;
    }
    const m0 = v128.load(src);
    const m1 = v128.load(src, 16);
    const k1 = v128.load(k, 16);
    const k2 = v128.load(k, 32);
    let a = i32x4.add(m0, k0);
    let b = i32x4.add(m1, k1);
    acc0 = i64x2.add(acc0, i64x2.extmul_low_i32x4_u(a, b));
    acc0 = i64x2.add(acc0, i64x2.extmul_high_i32x4_u(a, b));
    a = i32x4.add(m0, k1);
    b = i32x4.add(m1, k2);
    acc1 = i64x2.add(acc1, i64x2.extmul_low_i32x4_u(a, b));
    acc1 = i64x2.add(acc1, i64x2.extmul_high_i32x4_u(a, b));
    k0 = k2;
    p += STRIDE;
    k += STRIDE;
  }
  const bits = <u64> len << 3;
  store<u64>(out, i64x2.extract_lane(acc0, 0) + i64x2.extract_lane(acc0, 1) + bits);
  store<u64>(out, i64x2.extract_lane(acc1, 0) + i64x2.extract_lane(acc1, 1) + bits, 8);
}

/**
 * Pre-filter values of every `blockSize`-byte block of `len` bytes at `input` (the last may
 * be short): PREFILTER_BYTES per block at `out`. `key` holds prefilterKeyBytes(blockSize)
 * bytes.
 */
export function prefilterBlocks(
  input: usize,
  len: usize,
  blockSize: usize,
  key: usize,
  out: usize,
): void {
  while (len > 0) {
    const take = min<usize>(blockSize, len);
    prefilterBlock(input, take, key, out);
    input += take;
    len -= take;
    out += PREFILTER_BYTES;
  }
}
