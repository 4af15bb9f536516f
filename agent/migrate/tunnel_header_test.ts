import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { ErrorCode } from "../errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { readAll } from "../../fixtures/read_all.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { readTunnelHeader, writeTunnelHeader } from "./tunnel_header.ts";

/** A readable giving `bytes` in pieces cut at `cuts`. */
function pieces(bytes: Uint8Array, cuts: number[]): ReadableStream<Uint8Array> {
  const at = [
    0,
    ...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b),
    bytes.length,
  ];
  return ReadableStream.from(at.slice(1).map((end, i) => bytes.slice(at[i], end)));
}

seededTest("tunnel header: read back in any cut, the bytes after it intact", async (prng) => {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const header = { volume: "vm1", note: "x".repeat(prng.int(1000)) };
  const writing = writeTunnelHeader(writable, header);
  const first = await readable.getReader().read();
  await writing;
  const after = prng.fill(new Uint8Array(10_000));
  const all = new Uint8Array(first.value!.length + after.length);
  all.set(first.value!);
  all.set(after, first.value!.length);
  const cuts = Array.from({ length: 5 }, () => prng.int(all.length));
  const { header: got, rest } = await readTunnelHeader(pieces(all, cuts));
  assert.deepEqual(got, header);
  assertBytesEqual(await readAll(rest), after, "the bytes after the header");
});

Deno.test("tunnel header: an oversize length is refused before reading it", async () => {
  await assertRejectsCode(
    readTunnelHeader(pieces(new Uint8Array([0xff, 0xff, 1]), [])),
    ErrorCode.FRAME_TOO_LARGE,
  );
});

Deno.test("tunnel header: a stream ending inside it, or JSON that is no object, is malformed", async () => {
  await assertRejectsCode(
    readTunnelHeader(pieces(new Uint8Array([0, 10, 0x7b]), [])),
    ErrorCode.FRAME_MALFORMED,
  );
  const array = new TextEncoder().encode("[1]");
  await assertRejectsCode(
    readTunnelHeader(pieces(new Uint8Array([0, array.length, ...array]), [])),
    ErrorCode.FRAME_MALFORMED,
  );
  const garbage = new Uint8Array([0, 3, 0xff, 0xfe, 0x7b]);
  await assertRejectsCode(readTunnelHeader(pieces(garbage, [])), ErrorCode.FRAME_MALFORMED);
});
