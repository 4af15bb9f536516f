/**
 * The codec plugin contract: how a block's bytes are compressed for the wire and restored at
 * the other end. The block frame layer ({@linkcode ./block_frame.ts}) decides *whether* to use
 * a codec (zero blocks and blocks that do not shrink skip it); a codec only transforms bytes.
 *
 * @module
 */

/**
 * Compression algorithm ids as written on the wire. The id *is* the kind byte of a block frame
 * (see `docs/PROTOCOL.md`, "Block frames"); kind `0x00` is the zero marker and is not an
 * algorithm. Two implementations of the same standard format share one id: frames from
 * `zstd-native` and `zstd-wasm` are both plain RFC 8878 zstd frames, so either decodes the
 * other's. Add new ids at the end; never reuse one.
 */
export const Algorithm = {
  /** The payload is the block itself (kind byte `0x01`, "raw"). */
  NONE: 0x01,
  /** The payload is exactly one zstd frame (RFC 8878) that declares its content size. */
  ZSTD: 0x02,
} as const;

/** One of the {@linkcode Algorithm} ids. */
export type Algorithm = typeof Algorithm[keyof typeof Algorithm];

/**
 * A compression plugin. Implementations are plain objects; the core imports this interface,
 * never a plugin's internals, and picks a plugin by {@linkcode Codec.name}.
 *
 * Both methods are pure functions of their arguments: no I/O, no state that outlives a call,
 * safe to call again with the same input (a retry gives the same result).
 *
 * @example
 * ```ts
 * import type { Codec } from "./codec.ts";
 * import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
 * const codec: Codec = createNoneCodec();
 * const block = new Uint8Array([1, 2, 3]);
 * const back = codec.decompress(codec.compress(block, codec.defaultLevel), block.length);
 * console.assert(back.length === 3);
 * ```
 */
export interface Codec {
  /** The name configuration uses to pick this codec, e.g. `"zstd-native"`, `"none"`. */
  readonly name: string;
  /** The algorithm id written on the wire; implementations of one format share it. */
  readonly algorithm: Algorithm;
  /** The level {@linkcode Codec.compress} is called with when configuration names none. */
  readonly defaultLevel: number;
  /**
   * Compresses one block into a payload that {@linkcode Codec.decompress} of *any*
   * implementation of the same {@linkcode Codec.algorithm} restores.
   *
   * Called once per block sent (thousands of times per second during bulk sync), on the
   * sender only. Idempotent: the same block and level give an equivalent payload every time,
   * so a retried send may simply call it again. The result may be longer than `block`; the
   * caller then sends the block raw. It may share memory with `block` (codec `none` returns it
   * as is), so callers must not modify `block` while they hold the result.
   *
   * @param block the block's bytes, 0 to 2^32 - 1 of them
   * @param level codec-specific compression level; throws `INVALID_ARGUMENT` when out of range
   */
  compress(block: Uint8Array, level: number): Uint8Array;
  /**
   * Restores a block from a payload made by {@linkcode Codec.compress}, bounded by
   * `rawLength`: it never allocates more than `rawLength` bytes of output (plus a small
   * constant), whatever the payload claims, so a hostile peer cannot exhaust memory with a
   * "zip bomb".
   *
   * Called once per received compressed block, on the receiver only. Idempotent: the same
   * payload gives the same bytes or the same error every time, so retrying with the same
   * bytes cannot help; the block must be requested again.
   *
   * @param payload the compressed bytes exactly as received
   * @param rawLength the block length the frame declares; the result has exactly this length
   * @returns the block, exactly `rawLength` bytes
   * @throws {PresyncError} `FRAME_MALFORMED` when the payload is corrupt, truncated, has
   *   trailing bytes, or does not decode to exactly `rawLength` bytes
   */
  decompress(payload: Uint8Array, rawLength: number): Uint8Array;
}
