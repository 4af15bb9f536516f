import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import {
  errorFromReply,
  errorReply,
  MAX_FETCH_BLOCKS,
  parseErrorReply,
  parseFetchRequest,
  parseOpenRequest,
  parseReply,
  parseSyncRequest,
  type SyncReplies,
} from "./sync_messages.ts";

const ROOT = "ab".repeat(32);
const identity = newVolumeIdentity("vm1", 1 << 20, 65536);
const source = { instance: "0123456789abcdef", host: "db1", pid: 42 };

/** One valid example of every request and reply. */
const REQUESTS: unknown[] = [
  { op: "resume" },
  { op: "begin", generation: 3, cutTimeMs: 1700000000000, dirty: "AQgA", final: true },
  { op: "flush", seq: 7 },
  { op: "commit", generation: 3, merkleRoot: ROOT },
  { op: "verify", merkleRoot: ROOT, rootOnly: true },
  { op: "pages", blocks: [0, 5, 9] },
];
const REPLIES: [keyof SyncReplies, unknown][] = [
  ["open", {
    ok: true,
    resume: { committedGeneration: 2, merkleRoot: ROOT, cutTimeMs: 5, staged: null },
  }],
  ["resume", {
    ok: true,
    resume: {
      committedGeneration: 2,
      merkleRoot: ROOT,
      cutTimeMs: 5,
      staged: { generation: 3, received: "AQgA" },
    },
  }],
  ["begin", { ok: true }],
  ["open", {
    ok: true,
    resume: { committedGeneration: 0, merkleRoot: ROOT, cutTimeMs: 0, staged: null },
    patches: true,
  }],
  ["flush", { ok: true, seq: 7, rejected: [1, 9], resend: [4] }],
  ["pages", { ok: true, digests: "AAEC" }],
  ["commit", { ok: true, meta: { committedGeneration: 3, merkleRoot: ROOT, cutTimeMs: 6 } }],
  ["verify", {
    ok: true,
    generation: 3,
    report: { ok: false, merkleRoot: ROOT, rootMatches: true, damaged: [[4, 2]] },
  }],
];

Deno.test("every request parses to itself; unknown fields are ignored", () => {
  for (const request of REQUESTS) {
    assert.deepEqual(parseSyncRequest({ ...request as object, future: 1 }), request);
  }
  assert.deepEqual(parseSyncRequest({ op: "begin", generation: 1, cutTimeMs: 0, dirty: "" }), {
    op: "begin",
    generation: 1,
    cutTimeMs: 0,
    dirty: "",
    final: false,
  });
  const open = { op: "open", volume: "vm1", identity, source, patches: true };
  assert.deepEqual(parseOpenRequest(open), open);
  const legacy = parseOpenRequest({ op: "open", volume: "vm1", identity });
  assert.equal(legacy.source, undefined);
  const fetch = { op: "fetch", volume: "vm1", generation: 4, first: 0, count: MAX_FETCH_BLOCKS };
  assert.deepEqual(parseFetchRequest(fetch), fetch);
});

Deno.test("every reply parses to itself; an error reply is thrown as its error", () => {
  for (const [op, reply] of REPLIES) assert.deepEqual(parseReply(op, reply), reply);
  const failure = errorReply(
    new PresyncError(ErrorCode.NO_SPACE, "the disk is full", { retryable: true }),
  );
  const thrown = assertThrowsCode(() => parseReply("flush", failure), ErrorCode.NO_SPACE);
  assert.equal(thrown.retryable, true);
  assert.match(thrown.message, /^destination: the disk is full/);
  // A destination before patches sends no `resend`: nothing to send whole.
  assert.deepEqual(parseReply("flush", { ok: true, seq: 1, rejected: [] }).resend, []);
  assertThrowsCode(
    () => parseReply("flush", { ok: true, seq: 1, rejected: [], resend: [-1] }),
    ErrorCode.PROTOCOL_VIOLATION,
  );
  // A code this build does not know stays an error, as IO.
  assert.equal(errorFromReply({ code: "FROM_THE_FUTURE", message: "x" }).code, ErrorCode.IO);
  assert.deepEqual(parseErrorReply({ ok: false, code: "IO", message: "m" }), {
    ok: false,
    code: "IO",
    message: "m",
    retryable: false,
  });
});

Deno.test("malformed messages are protocol violations naming the field", () => {
  const cases: [() => unknown, RegExp][] = [
    [() => parseSyncRequest({ op: "delete" }), /op must be resume, begin/],
    [() => parseSyncRequest([1]), /must be a JSON object/],
    [() => parseSyncRequest({ op: "begin", generation: 0, cutTimeMs: 1, dirty: "" }), /generation/],
    [() => parseSyncRequest({ op: "flush", seq: "1" }), /seq must be an integer/],
    [() => parseSyncRequest({ op: "pages", blocks: [] }), /blocks must be 1 to 128 blocks/],
    [
      () => parseSyncRequest({ op: "pages", blocks: Array.from({ length: 129 }, (_, i) => i) }),
      /blocks must be 1 to 128/,
    ],
    [() => parseSyncRequest({ op: "pages", blocks: [1, -2] }), /blocks must be a list of integers/],
    [() => parseSyncRequest({ op: "commit", generation: 2, merkleRoot: "AB" }), /merkleRoot/],
    [() => parseSyncRequest({ op: "verify", rootOnly: "yes" }), /rootOnly must be true or false/],
    [() => parseOpenRequest({ op: "resume" }), /first message of a sync stream/],
    [
      () => parseOpenRequest({ op: "open", volume: "vm2", identity }),
      /identity.name must be the volume's name vm2/,
    ],
    [
      () => parseOpenRequest({ op: "open", volume: "vm1", identity: { ...identity, uuid: 1 } }),
      /identity is not valid/,
    ],
    [
      () =>
        parseOpenRequest({ op: "open", volume: "vm1", identity, source: { ...source, pid: -1 } }),
      /pid must be an integer/,
    ],
    [
      () =>
        parseOpenRequest({
          op: "open",
          volume: "vm1",
          identity,
          source: { ...source, instance: "x" },
        }),
      /instance must be 16 to 64 lowercase hex/,
    ],
    [
      () => parseFetchRequest({ op: "fetch", volume: "vm1", generation: 1, first: 0, count: 65 }),
      /at most 64/,
    ],
    [() => parseReply("begin", { ok: "yes" }), /ok must be true or false/],
    [() => parseReply("flush", { ok: true, seq: 1, rejected: [-1] }), /rejected must be a list/],
    [() => parseReply("commit", { ok: true, meta: null }), /meta.*must be a JSON object/],
    [
      () =>
        parseReply("verify", {
          ok: true,
          generation: 1,
          report: { ok: true, merkleRoot: ROOT, damaged: [[1]] },
        }),
      /damaged/,
    ],
    [
      () =>
        parseReply("open", {
          ok: true,
          resume: {
            committedGeneration: 1,
            merkleRoot: ROOT,
            cutTimeMs: 1,
            staged: { generation: 0, received: "" },
          },
        }),
      /staged.*generation/,
    ],
    [() => parseReply("flush", { ok: false, message: "no code" }), /code must be a string/],
  ];
  for (const [fn, message] of cases) {
    const err = assertThrowsCode(fn, ErrorCode.PROTOCOL_VIOLATION);
    assert.match(err.message, message);
  }
  // A name that could reach outside the store keeps its own code.
  assertThrowsCode(
    () => parseOpenRequest({ op: "open", volume: "../x", identity }),
    ErrorCode.INVALID_VOLUME_NAME,
  );
});

/** A random JSON value, up to `depth` levels deep. */
function randomValue(prng: Prng, depth: number): unknown {
  switch (prng.int(depth > 0 ? 8 : 6)) {
    case 0:
      return null;
    case 1:
      return prng.int(2) === 1;
    case 2:
      return [0, -1, 1, 2 ** 53, 1.5, NaN, Infinity, prng.int(1000)][prng.int(8)];
    case 3:
      return ["", "open", "begin", ROOT, "x".repeat(prng.int(100)), "vm1"][prng.int(6)];
    case 4:
      return prng.int(1000);
    case 5:
      return undefined;
    case 6:
      return Array.from({ length: prng.int(4) }, () => randomValue(prng, depth - 1));
    default:
      return Object.fromEntries(
        Array.from(
          { length: prng.int(5) },
          () => [
            ["op", "ok", "seq", "meta", "resume", "report", "x"][prng.int(7)],
            randomValue(prng, depth - 1),
          ],
        ),
      );
  }
}

/** A valid message with one field replaced, removed or added at random. */
function mutate(prng: Prng, message: unknown): unknown {
  const copy = JSON.parse(JSON.stringify(message));
  let target = copy;
  // Sometimes go one level down (resume, meta, report, staged…).
  const nested = Object.keys(target).filter((k) => target[k] && typeof target[k] === "object");
  if (nested.length > 0 && prng.int(2) === 1) target = target[nested[prng.int(nested.length)]];
  const keys = Object.keys(target);
  const key = keys.length > 0 && prng.int(4) > 0 ? keys[prng.int(keys.length)] : "extra";
  if (prng.int(3) === 0) delete target[key];
  else target[key] = randomValue(prng, 2);
  return copy;
}

seededTest(
  "sync message fuzz: 20,000 random and mutated messages parse or are refused with a code",
  (prng) => {
    const codes = new Map<string, number>();
    let accepted = 0;
    type Parser = (value: unknown) => unknown;
    // Each valid sample with the parser it belongs to.
    const samples: [Parser, unknown][] = [
      ...REQUESTS.map((r): [Parser, unknown] => [parseSyncRequest, r]),
      [parseOpenRequest, { op: "open", volume: "vm1", identity, source }],
      [parseFetchRequest, { op: "fetch", volume: "vm1", generation: 4, first: 0, count: 1 }],
      ...REPLIES.map(([op, reply]): [Parser, unknown] => [(v) => parseReply(op, v), reply]),
    ];
    for (let round = 0; round < 20_000; round++) {
      const [parse, sample] = samples[prng.int(samples.length)];
      const made = prng.int(3) === 0 ? randomValue(prng, 3) : mutate(prng, sample);
      // What a peer can send: whatever JSON.parse gives for some text.
      const value = JSON.parse(JSON.stringify(made) ?? "null");
      try {
        const parsed = parse(value);
        accepted++;
        // What is accepted is well typed: it survives a JSON round trip unchanged.
        assert.deepEqual(JSON.parse(JSON.stringify(parsed)), parsed);
      } catch (err) {
        assert.ok(
          err instanceof PresyncError,
          `round ${round}: ${err} for ${JSON.stringify(value)}`,
        );
        assert.ok(err.message.length > 10, "every refusal explains itself");
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
      }
    }
    assert.ok(accepted > 1000, `only ${accepted} accepted: the mutations are too destructive`);
    assert.ok((codes.get(ErrorCode.PROTOCOL_VIOLATION) ?? 0) > 1000, JSON.stringify([...codes]));
  },
);
