import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { blake3Keyed } from "./blake3.ts";
import { CoreBuffer } from "./core_buffer.ts";
import { perBlock } from "./_per_block.ts";
import { alloc, copyIn, core, free, scratch } from "./_wasm.ts";

/** Bytes of one block's pre-filter value. */
export const PREFILTER_BYTES = 16;
/** Bytes of the secret a {@linkcode PrefilterKey} is made from. */
export const PREFILTER_SECRET_BYTES = 32;
/** Bytes of {@linkcode PrefilterKey.id}. */
export const PREFILTER_KEY_ID_BYTES = 16;

/** Keyed-BLAKE3 input whose extended output is the NH key (domain separation). */
export const PREFILTER_EXPAND_CONTEXT = "presync prefilter NH key v1";
/** Keyed-BLAKE3 input whose output names the secret. */
export const PREFILTER_ID_CONTEXT = "presync prefilter key id v1";

const keyAddresses = new WeakMap<PrefilterKey, number>();
const keyRegistry = new FinalizationRegistry<number>(free);

/**
 * A pre-filter key: the NH key material for blocks of up to `maxBlockBytes`, expanded once
 * from a 32-byte secret as the extended output of keyed BLAKE3 (key = the secret, input =
 * {@linkcode PREFILTER_EXPAND_CONTEXT}), and held in WASM memory. Release with `free()` or
 * `using`.
 *
 * The secret must stay unknown to whoever writes the data (the guest): NH's collision bound
 * holds for a key the data does not depend on. Under a known key, collisions are easy to
 * build (see `prefilter_test.ts`).
 */
export class PrefilterKey {
  /** The largest block this key covers, in bytes. */
  readonly maxBlockBytes: number;
  /**
   * Names the secret without revealing it: keyed BLAKE3 of {@linkcode PREFILTER_ID_CONTEXT},
   * 16 bytes. Stored beside pre-filter values so that values made under another key are
   * never compared.
   */
  readonly id: Uint8Array;

  /** Expands `secret` (32 bytes) for blocks of up to `maxBlockBytes` bytes. */
  constructor(secret: Uint8Array, maxBlockBytes: number) {
    if (secret.length !== PREFILTER_SECRET_BYTES) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `pre-filter secret must be ${PREFILTER_SECRET_BYTES} bytes: received ${secret.length}`,
      );
    }
    assertInteger("pre-filter block size", maxBlockBytes, 1, 2 ** 30);
    this.maxBlockBytes = maxBlockBytes;
    this.id = blake3Keyed(secret, new TextEncoder().encode(PREFILTER_ID_CONTEXT), 16);
    const keyBytes = core.prefilterKeyBytes(maxBlockBytes);
    const ptr = alloc(keyBytes);
    const context = new TextEncoder().encode(PREFILTER_EXPAND_CONTEXT);
    copyIn(secret, scratch.key);
    copyIn(context, scratch.input);
    core.hasherInit(scratch.hasher, scratch.key);
    core.hasherUpdate(scratch.hasher, scratch.input, context.length);
    core.hasherFinalize(scratch.hasher, ptr, keyBytes);
    keyAddresses.set(this, ptr);
    keyRegistry.register(this, ptr, this);
  }

  /** Releases the WASM memory. Idempotent. */
  free(): void {
    const ptr = keyAddresses.get(this);
    if (ptr === undefined) return;
    keyRegistry.unregister(this);
    keyAddresses.delete(this);
    free(ptr);
  }

  [Symbol.dispose](): void {
    this.free();
  }
}

/**
 * Pre-filter values of every `blockSize`-byte block of `data` (the last may be short):
 * {@linkcode PREFILTER_BYTES} per block, back to back. The value is NH (UMAC's universal
 * hash, two Toeplitz iterations, see `assembly/prefilter.ts`) under `key`: two different
 * blocks of the same length get the same value with probability at most 2^-64 over the
 * choice of the secret. It runs at memory speed, several times faster than BLAKE3, and reads
 * data held in a {@linkcode CoreBuffer} in place.
 *
 * @example
 * ```ts
 * import { PrefilterKey, prefilterBlocks } from "./mod.ts";
 * using key = new PrefilterKey(crypto.getRandomValues(new Uint8Array(32)), 4096);
 * const values = prefilterBlocks(key, new Uint8Array(10_000), 4096);
 * console.assert(values.length === 3 * 16);
 * ```
 */
export function prefilterBlocks(
  key: PrefilterKey,
  data: Uint8Array,
  blockSize: number,
): Uint8Array {
  const ptr = keyAddresses.get(key);
  if (ptr === undefined) {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "PrefilterKey used after free()");
  }
  if (blockSize > key.maxBlockBytes) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `pre-filter key covers blocks of up to ${key.maxBlockBytes} bytes: received ${blockSize}`,
    );
  }
  return perBlock(
    data,
    blockSize,
    PREFILTER_BYTES,
    (block) => {
      using buffer = new CoreBuffer(block.length);
      buffer.view().set(block);
      return prefilterBlocks(key, buffer.view(), blockSize);
    },
    (input, len, out) => core.prefilterBlocks(input, len, blockSize, ptr, out),
  );
}
