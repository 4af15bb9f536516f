import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { decodeBlockFrame, decodePatch, maxPatchLength } from "../codec/mod.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { ErrorCode } from "../errors.ts";
import { type BlockLink, PacedDestination } from "./paced_destination.ts";

const codec = createZstdCodec();
const ROOT = "ef".repeat(32);

/** A link that records what it is sent. */
function recordingLink(rejected: number[] = [], patches = false, resend: number[] = []) {
  const sent: { block: number; hash: Uint8Array | null; frame: Uint8Array; patch: boolean }[] = [];
  const begins: boolean[] = [];
  const link: BlockLink = {
    resumeInfo: () => Promise.reject(new Error("not used")),
    beginGeneration: (_g, _d, _c, final) => Promise.resolve(void begins.push(final)),
    sendBlock: (block, hash, frame) => {
      sent.push({ block, hash, frame, patch: false });
      return Promise.resolve(frame.length + 41);
    },
    patches,
    pageDigests: () => Promise.reject(new Error("not used")),
    sendPatch: (block, hash, frame) => {
      sent.push({ block, hash, frame, patch: true });
      return Promise.resolve(frame.length + 41);
    },
    flush: () => Promise.resolve({ rejected, resend }),
    commit: (committedGeneration) =>
      Promise.resolve({ committedGeneration, merkleRoot: ROOT, cutTimeMs: 5 }),
  };
  return { link, sent, begins };
}

Deno.test("paced destination: blocks go out as frames with their hash, each paced first", async () => {
  const { link, sent } = recordingLink();
  const paced: number[] = [];
  const counters = { rawBytes: 0, wireBytes: 0 };
  const d = new PacedDestination(link, {
    codec,
    counters,
    pace: (bytes) => Promise.resolve(void paced.push(bytes)),
  });
  const text = new Uint8Array(65536).fill(65);
  const noise = crypto.getRandomValues(new Uint8Array(65536));
  await d.stage([
    { block: 0, data: text, hash: blake3(text) },
    { block: 1, data: null },
    { block: 2, data: noise, hash: blake3(noise) },
  ]);
  assert.deepEqual(sent.map((s) => s.block), [0, 1, 2]);
  assertBytesEqual(
    decodeBlockFrame(sent[0].frame, { maxRawLength: 65536, codecs: [codec] }),
    text,
    "block 0 decoded",
  );
  assert.ok(sent[0].frame.length < 1000, "compressible data is compressed");
  assert.equal(sent[1].hash, null, "a zero block travels as a marker");
  assert.equal(sent[2].frame.length, 65536 + 5, "incompressible data is sent raw");
  // Each block is paced by the bytes it puts on the wire, before it is sent.
  assert.deepEqual(paced, sent.map((s) => s.frame.length + 41));
  assert.equal(counters.rawBytes, 2 * 65536);
  assert.equal(counters.wireBytes, paced.reduce((a, b) => a + b));
});

Deno.test("paced destination: the final flag reaches begin; a commit is what the link said", async () => {
  const { link, begins } = recordingLink();
  const d = new PacedDestination(link, {
    codec,
    counters: { rawBytes: 0, wireBytes: 0 },
    pace: () => Promise.resolve(),
  });
  using dirty = new Bitmap(4);
  await d.beginGeneration(3, dirty, 1, { final: true });
  await d.beginGeneration(3, dirty, 1);
  assert.deepEqual(begins, [true, false]);
  assert.deepEqual(await d.commit(3, ROOT), {
    committedGeneration: 3,
    merkleRoot: ROOT,
    cutTimeMs: 5,
  });
});

Deno.test("paced destination: blocks the destination refused fail the flush, retryably", async () => {
  const { link } = recordingLink([4, 9]);
  const d = new PacedDestination(link, {
    codec,
    counters: { rawBytes: 0, wireBytes: 0 },
    pace: () => Promise.resolve(),
  });
  const err = await assertRejectsCode(d.flush(), ErrorCode.BLOCK_HASH_MISMATCH);
  assert.equal(err.retryable, true);
  assert.match(err.message, /rejected 2 blocks .*first: 4/);
});

Deno.test("paced destination: known pages travel as a patch of those pages only, when the link takes patches", async () => {
  const { link, sent } = recordingLink([], true, [7]);
  const counters = { rawBytes: 0, wireBytes: 0 };
  const d = new PacedDestination(link, { codec, counters, pace: () => Promise.resolve() });
  const noise = crypto.getRandomValues(new Uint8Array(65536));
  const short = crypto.getRandomValues(new Uint8Array(5000)); // a short last block
  await d.stage([
    { block: 0, data: noise, hash: blake3(noise), pages: 0b1000_0000_0000_0110 },
    { block: 1, data: noise, hash: blake3(noise), pages: 0xFFFF }, // every page: whole
    { block: 2, data: noise, hash: blake3(noise) }, // pages unknown: whole
    { block: 3, data: short, hash: blake3(short), pages: 0b10 },
  ]);
  assert.deepEqual(sent.map((s) => [s.block, s.patch]), [[0, true], [1, false], [2, false], [
    3,
    true,
  ]]);
  assert.deepEqual(sent[0].hash, blake3(noise), "a patch carries the whole new block's hash");
  const patch = decodeBlockFrame(sent[0].frame, {
    maxRawLength: maxPatchLength(65536),
    codecs: [codec],
  });
  const runs = decodePatch(patch, 65536);
  assert.deepEqual(runs.map((r) => [r.offset, r.bytes.length]), [[4096, 8192], [15 * 4096, 4096]]);
  assertBytesEqual(runs[0].bytes, noise.subarray(4096, 3 * 4096), "the first run's pages");
  const last = decodePatch(
    decodeBlockFrame(sent[3].frame, { maxRawLength: maxPatchLength(65536), codecs: [codec] }),
    5000,
  );
  assert.deepEqual(last.map((r) => [r.offset, r.bytes.length]), [[4096, 904]]);
  assert.equal(counters.rawBytes, 3 * 4096 + 2 * 65536 + 904);
  assert.deepEqual(await d.flush(), { resend: [7] });
});

Deno.test("paced destination: a link without patches gets every block whole", async () => {
  const { link, sent } = recordingLink([], false);
  const d = new PacedDestination(link, {
    codec,
    counters: { rawBytes: 0, wireBytes: 0 },
    pace: () => Promise.resolve(),
  });
  const noise = crypto.getRandomValues(new Uint8Array(65536));
  await d.stage([{ block: 0, data: noise, hash: blake3(noise), pages: 0b1 }]);
  assert.deepEqual(sent.map((s) => s.patch), [false]);
  assert.equal(sent[0].frame.length, 65536 + 5);
});
