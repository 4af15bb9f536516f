/**
 * Interoperability of the zstd algorithm id: frames made by one implementation decode with
 * the other and with the reference `zstd` command-line tool (Debian package `zstd`), and the
 * tool's output decodes with ours. The CLI tests are ignored when `zstd` is not on PATH.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../errors.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { fillText, mixedData } from "../../fixtures/data.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createZstdWasmCodec } from "../../plugins/codec-zstd-wasm/mod.ts";
import { decodeBlockFrame, encodeBlockFrame } from "./block_frame.ts";
import type { Codec } from "./codec.ts";

const BLOCK = 64 * 1024;
const LEVELS = [1, 3, 9, 19];

function zstdCliVersion(): string | undefined {
  try {
    const out = new Deno.Command("zstd", { args: ["--version"] }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined; // NotFound: not installed
  }
}
const cliMissing = zstdCliVersion() === undefined;
const needsCli = cliMissing ? " (ignored: `zstd` is not on PATH; apt-get install zstd)" : "";

/** Runs `zstd` with `args` on the file holding `input` and returns what it wrote to stdout. */
async function zstdCli(args: string[], input: Uint8Array): Promise<Uint8Array> {
  const path = await Deno.makeTempFile({ prefix: "presync_codec_" });
  try {
    await Deno.writeFile(path, input);
    const out = await new Deno.Command("zstd", { args: [...args, "-c", path] }).output();
    if (!out.success) {
      throw new Error(`zstd ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    return out.stdout;
  } finally {
    await Deno.remove(path);
  }
}

/** Pipes `input` through `zstd` with `args` (no file, so the tool cannot know the size). */
async function zstdCliPipe(args: string[], input: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("zstd", { args, stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const out = await child.output();
  assert.ok(out.success, `zstd ${args.join(" ")} failed`);
  return out.stdout;
}

async function implementations(): Promise<[Codec, Codec, Codec]> {
  return [createZstdCodec(), createZstdCodec({ checksum: false }), await createZstdWasmCodec()];
}

seededTest(
  "zstd interop: frames from each implementation decode with the other, every level",
  async (prng) => {
    const codecs = await implementations();
    const blocks = [
      fillText(prng, new Uint8Array(BLOCK)),
      mixedData(prng, 4 * BLOCK).subarray(BLOCK, 2 * BLOCK),
      prng.fill(new Uint8Array(777)),
      new Uint8Array(BLOCK).fill(0xAB),
    ];
    for (const block of blocks) {
      for (const level of LEVELS) {
        for (const maker of codecs) {
          const payload = maker.compress(block, level);
          for (const reader of codecs) {
            assertBytesEqual(
              reader.decompress(payload, block.length),
              block,
              `${maker.name} level ${level} read by ${reader.name}`,
            );
          }
        }
      }
    }
  },
);

seededTest(
  "zstd interop: block frames made with zstd-native decode with zstd-wasm and back",
  async (prng) => {
    const [native, , wasm] = await implementations();
    const data = mixedData(prng, 32 * BLOCK);
    for (const [maker, reader] of [[native, wasm], [wasm, native]]) {
      for (let offset = 0; offset < data.length; offset += BLOCK) {
        const block = data.subarray(offset, offset + BLOCK);
        const frame = encodeBlockFrame(block, maker);
        const back = decodeBlockFrame(frame, { maxRawLength: BLOCK, codecs: [reader] });
        assertBytesEqual(back, block, `${maker.name} → ${reader.name} at ${offset}`);
      }
    }
  },
);

Deno.test({
  name: `zstd interop: the zstd CLI decompresses our payloads${needsCli}`,
  ignore: cliMissing,
  fn: () =>
    withSeed(async (prng) => {
      const block = mixedData(prng, 8 * BLOCK);
      fillText(prng, block.subarray(0, BLOCK));
      for (const codec of await implementations()) {
        for (const level of [1, 3, 19]) {
          const payload = codec.compress(block, level);
          const out = await zstdCli(["-d", "-q"], payload);
          assertBytesEqual(out, block, `zstd -d of ${codec.name} level ${level}`);
        }
      }
    }),
});

Deno.test({
  name: `zstd interop: our codecs decode the zstd CLI's output of a file${needsCli}`,
  ignore: cliMissing,
  fn: () =>
    withSeed(async (prng) => {
      const block = mixedData(prng, 8 * BLOCK);
      fillText(prng, block.subarray(0, BLOCK));
      for (const args of [["-1"], ["-3", "--no-check"], ["-19"], ["--fast=3"]]) {
        const payload = await zstdCli(["-q", ...args], block);
        for (const codec of await implementations()) {
          assertBytesEqual(
            codec.decompress(payload, block.length),
            block,
            `zstd ${args.join(" ")} read by ${codec.name}`,
          );
        }
      }
    }),
});

Deno.test({
  name: "zstd interop: the zstd CLI's output of a pipe is rejected for lacking a content size" +
    needsCli,
  ignore: cliMissing,
  fn: async () => {
    const block = new TextEncoder().encode("piped ".repeat(1000));
    const payload = await zstdCliPipe(["-1", "-q", "-c"], block);
    for (const codec of await implementations()) {
      assert.match(
        assertThrowsCode(() => codec.decompress(payload, block.length), ErrorCode.FRAME_MALFORMED)
          .message,
        /does not declare its content size/,
      );
    }
  },
});
