import assert from "node:assert/strict";
import { ErrorCode } from "../errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { CODEC_NAMES, codecByName, DEFAULT_CODEC_NAME } from "./codec_registry.ts";

Deno.test("codecByName: returns a codec of that name for every known name", async () => {
  for (const name of CODEC_NAMES) {
    assert.equal((await codecByName(name)).name, name);
  }
});

Deno.test("codecByName: an unknown name is CODEC_UNKNOWN listing the known names", async () => {
  const error = await assertRejectsCode(codecByName("lz4"), ErrorCode.CODEC_UNKNOWN);
  assert.match(
    error.message,
    /^unknown codec "lz4": expected one of "zstd-native", "zstd-wasm", "none"$/,
  );
});

Deno.test("DEFAULT_CODEC_NAME: is the measured fastest codec, zstd-native", () => {
  assert.equal(DEFAULT_CODEC_NAME, "zstd-native");
  assert.ok(CODEC_NAMES.includes(DEFAULT_CODEC_NAME));
});
