/**
 * The `none` codec: no compression. Useful on links fast enough that compression would cost
 * more CPU time than it saves in transfer time, and as a reference in tests and benchmarks.
 *
 * @module
 */

import { Algorithm, type Codec } from "../../agent/codec/codec.ts";
import { assertInteger, ErrorCode, PresyncError } from "../../agent/errors.ts";

/**
 * Creates the `none` codec: `compress` returns the block itself (no copy), `decompress`
 * checks the length and returns the payload itself. The level must be 0.
 *
 * @example
 * ```ts
 * import { createNoneCodec } from "./none_codec.ts";
 * const none = createNoneCodec();
 * const block = new Uint8Array([7, 7, 7]);
 * console.assert(none.compress(block, 0) === block);
 * ```
 */
export function createNoneCodec(): Codec {
  return {
    name: "none",
    algorithm: Algorithm.NONE,
    defaultLevel: 0,
    compress(block: Uint8Array, level: number): Uint8Array {
      assertInteger("none codec level", level, 0, 0);
      return block;
    },
    decompress(payload: Uint8Array, rawLength: number): Uint8Array {
      if (payload.length !== rawLength) {
        throw new PresyncError(
          ErrorCode.FRAME_MALFORMED,
          `none codec payload length does not match the raw length: expected ${rawLength} ` +
            `bytes, received ${payload.length}`,
        );
      }
      return payload;
    },
  };
}
