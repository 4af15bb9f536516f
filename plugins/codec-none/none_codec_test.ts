import assert from "node:assert/strict";
import { Algorithm } from "../../agent/codec/codec.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { testCodecContract } from "../../fixtures/codec_contract.ts";
import { createNoneCodec } from "./mod.ts";

testCodecContract("none", () => createNoneCodec());

Deno.test("none: is named none and uses the raw algorithm id", () => {
  const none = createNoneCodec();
  assert.equal(none.name, "none");
  assert.equal(none.algorithm, Algorithm.NONE);
});

Deno.test("none: compress returns the block itself, without copying", () => {
  const block = new Uint8Array([1, 2, 3]);
  assert.equal(createNoneCodec().compress(block, 0), block);
});

Deno.test("none: decompress names expected and received lengths on a mismatch", () => {
  assert.match(
    assertThrowsCode(
      () => createNoneCodec().decompress(new Uint8Array(3), 4),
      ErrorCode.FRAME_MALFORMED,
    ).message,
    /expected 4 bytes, received 3/,
  );
});
