import assert from "node:assert/strict";
import { seededTest } from "../../fixtures/seeded.ts";
import type { Prng } from "../../fixtures/prng.ts";
import * as C from "./nbd_constants.ts";
import { type NbdExport, serveNbdConnection } from "./mod.ts";
import {
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOption,
  parseExportRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from "./option_codec.ts";
import { checkRequest, decodeRequest, encodeRequest } from "./request_codec.ts";
import { concatBytes } from "../bytes.ts";

const SIZE = 1 << 20;

/** A memory-backed export. */
function memoryExport(readOnly = false): NbdExport {
  const bytes = new Uint8Array(SIZE);
  return {
    name: "mem",
    sizeBytes: SIZE,
    readOnly,
    read: (o, l) => Promise.resolve(bytes.slice(o, o + l)),
    write: (o, d) => Promise.resolve(void bytes.set(d, o)),
    writeZeroes: (o, l) => Promise.resolve(void bytes.fill(0, o, o + l)),
    trim: () => Promise.resolve(),
    flush: () => Promise.resolve(),
  };
}

/** Feeds `input` to a server connection and collects everything it answers. */
async function serveBytes(input: Uint8Array, ex: NbdExport): Promise<number> {
  let answered = 0;
  const readable = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let at = 0; at < input.length; at += 97) controller.enqueue(input.slice(at, at + 97));
      controller.close();
    },
  });
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      answered += chunk.length;
    },
  });
  await serveNbdConnection({ readable, writable }, new Map([[ex.name, ex]]));
  return answered;
}

/** A valid session: handshake with structured replies and a meta context, then requests. */
function validSession(prng: Prng): Uint8Array {
  const parts: Uint8Array[] = [new Uint8Array([0, 0, 0, 3])];
  parts.push(encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
  parts.push(encodeOption(C.NBD_OPT_LIST));
  parts.push(
    encodeOption(C.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest("mem", ["base:allocation"])),
  );
  parts.push(encodeOption(C.NBD_OPT_GO, encodeExportRequest("mem", [C.NBD_INFO_BLOCK_SIZE])));
  for (let i = 0; i < 6; i++) {
    const type = prng.int(8);
    const length = prng.int(3) === 0 ? prng.int(0xffffffff) : prng.int(9000);
    const offset = prng.int(3) === 0 ? prng.nextU32() * 4 : prng.int(SIZE);
    parts.push(
      encodeRequest(type, prng.int(4) === 0 ? prng.int(64) : 0, BigInt(i), offset, length),
    );
    if (type === C.NBD_CMD_WRITE) parts.push(new Uint8Array(Math.min(length, 9000)));
  }
  return concatBytes(parts);
}

seededTest("fuzz: 10,000 random request headers and option payloads never throw", (prng) => {
  const ctx = {
    sizeBytes: SIZE,
    readOnly: false,
    fua: true,
    structuredReplies: true,
    metaContexts: 1,
  };
  for (let i = 0; i < 10_000; i++) {
    const bytes = prng.fill(new Uint8Array(C.REQUEST_HEADER_BYTES + prng.int(64)));
    if (prng.int(2) === 0) new DataView(bytes.buffer).setUint32(0, C.NBD_REQUEST_MAGIC);
    if (prng.int(2) === 0) bytes[6] = 0;
    const req = decodeRequest(bytes);
    const verdict = checkRequest(req, { ...ctx, readOnly: prng.int(2) === 0 });
    if (!verdict.ok) {
      assert.ok([C.NBD_EINVAL, C.NBD_ENOSPC, C.NBD_EPERM, C.NBD_EOVERFLOW].includes(verdict.error));
    } else if (req.type !== C.NBD_CMD_DISC) {
      assert.ok(req.offset + BigInt(req.length) <= BigInt(SIZE), "in range when accepted");
    }
    const data = bytes.subarray(C.REQUEST_HEADER_BYTES - prng.int(C.REQUEST_HEADER_BYTES));
    const info = parseExportRequest(data);
    if (!info.ok) assert.equal(info.error, C.NBD_REP_ERR_INVALID);
    const meta = parseMetaContextRequest(data);
    if (!meta.ok) assert.equal(meta.error, C.NBD_REP_ERR_INVALID);
    parseOptionHeader(bytes);
  }
});

seededTest("fuzz: 1,500 mutated sessions through the server end without a hang", async (prng) => {
  const exports = [memoryExport(false), memoryExport(true)];
  for (let i = 0; i < 1_500; i++) {
    const input = validSession(prng);
    const flips = prng.int(4);
    for (let f = 0; f < flips; f++) input[prng.int(input.length)] = prng.int(256);
    const cut = prng.int(4) === 0 ? prng.int(input.length) : input.length;
    const answered = await serveBytes(input.subarray(0, cut), exports[i % 2]);
    assert.ok(answered >= 18, "the greeting is always sent");
  }
});
