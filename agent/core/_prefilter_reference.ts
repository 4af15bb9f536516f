// A plain TypeScript statement of the pre-filter, for tests only: the key expansion with an
// independent BLAKE3 (blake3-wasm) and NH with BigInt arithmetic, written from the
// definition in assembly/prefilter.ts rather than from its SIMD code.

import { Buffer } from "node:buffer";
import { keyedHash } from "blake3-wasm";
import { PREFILTER_BYTES, PREFILTER_EXPAND_CONTEXT } from "./prefilter.ts";

const MASK32 = 0xffff_ffffn;
const MASK64 = 0xffff_ffff_ffff_ffffn;
/** Words the key moves by between the two iterations (16 bytes). */
const SHIFT_WORDS = 4;

/** The NH key bytes for blocks of up to `maxBlockBytes`: padded block + 16 bytes. */
export function referenceExpand(secret: Uint8Array, maxBlockBytes: number): Uint8Array {
  const length = Math.ceil(maxBlockBytes / 32) * 32 + 16;
  return new Uint8Array(keyedHash(Buffer.from(secret), PREFILTER_EXPAND_CONTEXT, { length }));
}

function words(bytes: Uint8Array, count: number): bigint[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from(
    { length: count },
    (_, i) => 4 * i + 4 <= bytes.length ? BigInt(view.getUint32(4 * i, true)) : 0n,
  );
}

/** NH of one block under `nhKey` (the expanded key): two 64-bit sums, little-endian. */
export function referenceNh(nhKey: Uint8Array, block: Uint8Array): Uint8Array {
  const padded = new Uint8Array(Math.ceil(block.length / 32) * 32);
  padded.set(block);
  const m = words(padded, padded.length / 4);
  const k = words(nhKey, nhKey.length / 4);
  const out = new Uint8Array(PREFILTER_BYTES);
  const view = new DataView(out.buffer);
  for (let iteration = 0; iteration < 2; iteration++) {
    const shift = iteration * SHIFT_WORDS;
    let sum = 0n;
    for (let stride = 0; stride < m.length; stride += 8) {
      for (let i = 0; i < 4; i++) {
        const a = (m[stride + i] + k[stride + i + shift]) & MASK32;
        const b = (m[stride + i + 4] + k[stride + i + 4 + shift]) & MASK32;
        sum = (sum + a * b) & MASK64;
      }
    }
    view.setBigUint64(8 * iteration, (sum + BigInt(block.length) * 8n) & MASK64, true);
  }
  return out;
}

/** Pre-filter values of every block of `data`, as `prefilterBlocks` computes them. */
export function referencePrefilter(
  secret: Uint8Array,
  data: Uint8Array,
  blockSize: number,
): Uint8Array {
  const nhKey = referenceExpand(secret, blockSize);
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * PREFILTER_BYTES);
  for (let i = 0; i < blocks; i++) {
    out.set(
      referenceNh(nhKey, data.subarray(i * blockSize, (i + 1) * blockSize)),
      i * PREFILTER_BYTES,
    );
  }
  return out;
}
