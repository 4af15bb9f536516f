import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Prng } from "../../fixtures/prng.ts";
import { encodeBlockFrame } from "../codec/mod.ts";
import { blake3 } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Cut } from "../tracker.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { memoryChannelPair, Session, type SessionStream } from "../wire/mod.ts";
import { fetchBlocks, MAX_FETCH_BLOCKS, serveFetchStream } from "./block_fetch.ts";
import { MessageKind, MessageReader, MessageWriter } from "./message_stream.ts";
import { encodeBlockMessage } from "./sync_protocol.ts";

const BS = 4096;
const identity = newVolumeIdentity("vm1", 10 * BS + 100, BS); // the last block is short
const codec = createZstdCodec();
const psk = new Uint8Array(32).fill(7);
const quiet = () => {};

/** The image: random, with block 3 all zeros. */
const image = new Prng(5).fill(new Uint8Array(identity.sizeBytes));
image.fill(0, 3 * BS, 4 * BS);

const cut: Cut = {
  dirty: null as never,
  pointInTime: true,
  read: (first, count) => Promise.resolve(image.slice(first * BS, (first + count) * BS)),
  release: () => Promise.resolve(),
};

/** A destination session and a source session answering fetches with `answer`. */
async function sessions(answer: (stream: SessionStream) => void) {
  const [a, b] = memoryChannelPair();
  const [source, destination] = await Promise.all([
    Session.connect(a, { psk, logger: quiet }),
    Session.accept(b, { psk, logger: quiet }),
  ]);
  (async () => {
    while (true) {
      const stream = await source.acceptStream().catch(() => null);
      if (!stream) return;
      answer(stream);
    }
  })();
  return {
    destination,
    [Symbol.asyncDispose]: () => {
      source.abort();
      destination.abort();
      return Promise.resolve();
    },
  };
}

const honest = (stream: SessionStream) =>
  serveFetchStream(stream, (volume, generation) => {
    if (volume !== "vm1" || generation !== 4) {
      throw new PresyncError(ErrorCode.GENERATION_MISMATCH, `generation ${generation} not sent`);
    }
    return { cut, identity };
  }, codec);

Deno.test("block fetch: blocks arrive checked, zero and short blocks included", async () => {
  await using s = await sessions(honest);
  const blocks = await fetchBlocks(s.destination, identity, 4, 2, 9, [codec]);
  assert.equal(blocks.length, 9);
  for (const { block, data, hash } of blocks) {
    const expected = image.subarray(block * BS, Math.min((block + 1) * BS, image.length));
    assertBytesEqual(data, expected, `block ${block}`);
    assert.equal(hash === null, block === 3, `block ${block} zero marker`);
  }
  assert.equal(blocks[8].data.length, 100);
});

Deno.test("block fetch: the source's refusals come back as typed errors", async () => {
  await using s = await sessions(honest);
  await assertRejectsCode(
    fetchBlocks(s.destination, identity, 5, 0, 1, [codec]),
    ErrorCode.GENERATION_MISMATCH,
  );
  await assertRejectsCode(
    fetchBlocks(s.destination, identity, 4, 8, 5, [codec]),
    ErrorCode.PROTOCOL_VIOLATION,
  );
  await assertRejectsCode(
    fetchBlocks(s.destination, identity, 4, 0, MAX_FETCH_BLOCKS + 1, [codec]),
    ErrorCode.PROTOCOL_VIOLATION,
  );
  // A name that is not a volume name is refused before anything is looked up.
  await assertRejectsCode(
    fetchBlocks(s.destination, { ...identity, name: "../etc" }, 4, 0, 1, [codec]),
    ErrorCode.INVALID_VOLUME_NAME,
  );
});

Deno.test("block fetch: a block whose bytes do not match its hash is refused", async () => {
  // A source that sends block 1 with block 2's hash, then one that sends the wrong block.
  const liar = (swap: "hash" | "number") => async (stream: SessionStream) => {
    const reader = new MessageReader(stream.readable, 4096);
    await reader.read();
    const writer = new MessageWriter(stream.writable);
    const data = image.slice(BS, 2 * BS);
    const hash = blake3(
      swap === "hash" ? image.slice(2 * BS, 3 * BS) : data,
    );
    const frame = encodeBlockFrame(data, codec);
    await writer.write(
      MessageKind.BLOCK,
      encodeBlockMessage(swap === "number" ? 2 : 1, hash, frame),
    );
    await writer.close();
  };
  for (const swap of ["hash", "number"] as const) {
    await using s = await sessions(liar(swap));
    await assertRejectsCode(
      fetchBlocks(s.destination, identity, 4, 1, 1, [codec]),
      ErrorCode.BLOCK_HASH_MISMATCH,
    );
  }
});
