/**
 * Codec plugin `none`: blocks travel uncompressed.
 *
 * @module
 */

export { createNoneCodec } from "./none_codec.ts";
