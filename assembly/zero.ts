// All-zero block detection, 64 bytes per step with v128 ORs and an early exit.

/** True when the `len` bytes at `ptr` are all zero. */
export function isZero(ptr: usize, len: usize): bool {
  const end = ptr + len;
  // Unaligned head and tail are fine for v128.load; the body goes 64 bytes at a time.
  while (ptr + 64 <= end) {
    const acc = v128.or(
      v128.or(v128.load(ptr), v128.load(ptr, 16)),
      v128.or(v128.load(ptr, 32), v128.load(ptr, 48)),
    );
    if (v128.any_true(acc)) return false;
    ptr += 64;
  }
  while (ptr + 16 <= end) {
    if (v128.any_true(v128.load(ptr))) return false;
    ptr += 16;
  }
  while (ptr < end) {
    if (load<u8>(ptr) != 0) return false;
    ptr++;
  }
  return true;
}

/**
 * For every `blockSize`-byte block of `len` bytes at `input` (the last may be short), sets
 * bit `bitOffset + i` of the bitmap at `out` when block i is all zero. Other bits are left
 * as they are.
 */
export function zeroBlocks(
  input: usize,
  len: usize,
  blockSize: usize,
  out: usize,
  bitOffset: u32,
): void {
  let bit = bitOffset;
  while (len > 0) {
    const take = min<usize>(blockSize, len);
    if (isZero(input, take)) {
      const at = out + (<usize> bit >> 3);
      store<u8>(at, load<u8>(at) | (<u8> 1 << <u8> (bit & 7)));
    }
    input += take;
    len -= take;
    bit++;
  }
}
