// Manifest diff: a manifest is an array of 32-byte block hashes, block i at offset 32 * i.

/**
 * Compares `count` hashes of two manifests and sets bit `bitOffset + i` of the bitmap at
 * `out` wherever hash i differs. Other bits are left as they are.
 */
export function diffHashes(
  oldPtr: usize,
  newPtr: usize,
  count: u32,
  out: usize,
  bitOffset: u32,
): void {
  for (let i: u32 = 0; i < count; i++) {
    const at = <usize> i << 5;
    const diff = v128.or(
      v128.xor(v128.load(oldPtr + at), v128.load(newPtr + at)),
      v128.xor(v128.load(oldPtr + at, 16), v128.load(newPtr + at, 16)),
    );
    if (v128.any_true(diff)) {
      const bit = bitOffset + i;
      const byte = out + (<usize> bit >> 3);
      store<u8>(byte, load<u8>(byte) | (<u8> 1 << <u8> (bit & 7)));
    }
  }
}
