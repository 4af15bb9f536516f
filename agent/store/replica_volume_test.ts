import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { canMountTmpfs, withTmpfs } from "../../fixtures/tmpfs.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { ReplicaStore } from "./replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import type { ReplicaBackend } from "./replica_backend.ts";
import type { ReplicaVolume } from "./replica_volume.ts";

const BLOCK = 4096;
const BLOCKS = 32;

async function newReplica(fs: FileSystem, root: string): Promise<ReplicaVolume> {
  await fs.mkdir(root);
  return new ReplicaStore(new DirectoryBackend(fs, root)).init(
    newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK),
  );
}

/** A replica past its first generation (block 0 holds 0x01s), so the next one is logged. */
async function seededReplica(fs: FileSystem, root: string): Promise<ReplicaVolume> {
  const replica = await newReplica(fs, root);
  await stageAll(replica, 1, [0], 1);
  await replica.commit(1, await predictRoot(replica));
  return replica;
}

/** Stages `blocks` of generation `generation` with content `fill` and flushes. */
async function stageAll(
  replica: ReplicaVolume,
  generation: number,
  blocks: number[],
  fill: number,
) {
  using dirty = new Bitmap(BLOCKS);
  for (const b of blocks) dirty.set(b);
  await replica.beginGeneration(generation, dirty, Date.now());
  const data = new Uint8Array(BLOCK).fill(fill);
  const result = await replica.stage(blocks.map((block) => ({ block, data, hash: blake3(data) })));
  assert.equal(result.staged, blocks.length);
  await replica.flush();
}

Deno.test("a block whose bytes do not match its hash is rejected, not staged", async () => {
  const fs = new PowerCutFileSystem();
  const replica = await newReplica(fs, "/s");
  try {
    using dirty = new Bitmap(BLOCKS).set(3).set(4);
    await replica.beginGeneration(1, dirty, 0);
    const data = new Uint8Array(BLOCK).fill(5);
    const flipped = data.slice();
    flipped[100] ^= 1;
    const result = await replica.stage([
      { block: 3, data: flipped, hash: blake3(data) },
      { block: 4, data, hash: blake3(data) },
    ]);
    assert.deepStrictEqual(result.rejected, [3]);
    assert.equal(result.staged, 1);
    await assertRejectsCode(replica.commit(1, "00".repeat(32)), "GENERATION_MISMATCH");
    await assertRejectsCode(
      replica.stage([{ block: 9, data, hash: blake3(data) }]),
      "GENERATION_MISMATCH",
    );
  } finally {
    replica.close();
  }
});

Deno.test("a batch with a block outside the generation stages nothing of it; a block twice in a batch is one duplicate", async () => {
  const fs = new PowerCutFileSystem();
  const replica = await newReplica(fs, "/s");
  try {
    using dirty = new Bitmap(BLOCKS).set(3).set(4).set(5);
    await replica.beginGeneration(1, dirty, 0);
    const data = new Uint8Array(BLOCK).fill(5);
    const flipped = data.slice();
    flipped[100] ^= 1;
    const result = await replica.stage([
      { block: 3, data: flipped, hash: blake3(data) },
      { block: 4, data, hash: blake3(data) },
      { block: 4, data, hash: blake3(data) },
    ]);
    assert.deepStrictEqual(result, { staged: 1, duplicates: 1, rejected: [3], resend: [] });
    await assertRejectsCode(
      replica.stage([
        { block: 5, data, hash: blake3(data) },
        { block: 9, data, hash: blake3(data) },
      ]),
      "GENERATION_MISMATCH",
    );
    const again = await replica.stage([
      { block: 3, data, hash: blake3(data) },
      { block: 5, data, hash: blake3(data) },
    ]);
    assert.deepStrictEqual(
      again,
      { staged: 2, duplicates: 0, rejected: [], resend: [] },
      "5 was not staged",
    );
    await replica.flush();
    await replica.commit(1, await predictRoot(replica));
    assertBytesEqual(await replica.readCommitted(5), data, "block 5 committed");
  } finally {
    replica.close();
  }
});

seededTest("a corrupted staging record is named at commit and nothing is applied", async (prng) => {
  const fs = new PowerCutFileSystem();
  const replica = await seededReplica(fs, "/s");
  const root1 = replica.meta.merkleRoot;
  await stageAll(replica, 2, [1, 2, 3], 7);
  replica.close();
  // Flip one byte in the log, inside a payload or a header.
  const log = await fs.open("/s/db1/staging/log", { write: true });
  const at = prng.int(await log.size());
  const byte = new Uint8Array(1);
  await log.read(at, byte);
  byte[0] ^= 1 << prng.int(8);
  await log.write(at, byte);
  log.close();
  const reopened = await new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1");
  try {
    const err = await assertRejectsCode(reopened.commit(2, "00".repeat(32)), "STORE_CORRUPT");
    assert.match(err.message, /staging (log )?record/);
    assert.equal(reopened.meta.committedGeneration, 1);
    const check = await reopened.verify({ expectedRoot: root1 });
    assert.ok(check.ok, JSON.stringify(check));
  } finally {
    reopened.close();
  }
});

Deno.test("a wrong Merkle root refuses the commit and keeps the staged blocks", async () => {
  const fs = new PowerCutFileSystem();
  const replica = await newReplica(fs, "/s");
  try {
    await stageAll(replica, 1, [0, 31], 1);
    const err = await assertRejectsCode(replica.commit(1, "ab".repeat(32)), "VERIFY_MISMATCH");
    assert.match(err.message, /not committed/);
    assert.equal(replica.meta.committedGeneration, 0);
    assert.equal(replica.resumeInfo().staged?.received.popcount(), 2);
  } finally {
    replica.close();
  }
});

Deno.test("damaged meta.json is reported as such", async () => {
  const fs = new PowerCutFileSystem();
  (await newReplica(fs, "/s")).close();
  const meta = await fs.open("/s/db1/meta.json", { write: true });
  await meta.write(0, new TextEncoder().encode("{ garbage"));
  meta.close();
  const err = await assertRejectsCode(
    new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1"),
    "STORE_CORRUPT",
  );
  assert.match(err.message, /metadata of replica db1 at \/s\/db1 is damaged/);
  await assertRejectsCode(
    new ReplicaStore(new DirectoryBackend(fs, "/s")).open("nope"),
    "VOLUME_NOT_FOUND",
  );
  await assertRejectsCode(
    new ReplicaStore(new DirectoryBackend(fs, "/s")).has("../etc"),
    "INVALID_VOLUME_NAME",
  );
});

Deno.test("a full disk fails the commit with NO_SPACE and the last generation stays intact", async () => {
  const fs = new PowerCutFileSystem();
  const replica = await newReplica(fs, "/s");
  await stageAll(replica, 1, [0, 1, 2], 3);
  const meta1 = await replica.commit(1, await predictRoot(replica));
  replica.close();
  // Room for a little staging but not for a whole generation.
  fs.maxBytes = 0;
  const again = await new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1");
  try {
    using dirty = new Bitmap(BLOCKS).setRange(4, 20);
    await assertRejectsCode(
      again.beginGeneration(2, dirty, 0).then(async () => {
        const data = new Uint8Array(BLOCK).fill(9);
        await again.stage([{ block: 4, data, hash: blake3(data) }]);
        await again.flush();
      }),
      "NO_SPACE",
    );
    assert.equal(again.meta.committedGeneration, 1);
    assert.ok((await again.verify({ expectedRoot: meta1.merkleRoot })).ok);
  } finally {
    again.close();
  }
});

/** The root a replica will have after committing what it staged (what a source computes). */
async function predictRoot(replica: ReplicaVolume): Promise<string> {
  try {
    await replica.commit(replica.meta.committedGeneration + 1, "00".repeat(32));
  } catch (err) {
    const match = /Merkle root ([0-9a-f]{64})/.exec(String(err));
    if (match) return match[1];
    throw err;
  }
  throw new Error("commit with a zero root unexpectedly succeeded");
}

Deno.test({
  name: "a real full disk (tmpfs) gives NO_SPACE and generation 1 stays intact",
  ignore: !canMountTmpfs,
  fn: () =>
    withTmpfs("256k", async (mount) => {
      const fs = new DenoFileSystem();
      const replica = await newReplica(fs, `${mount}/store`);
      await stageAll(replica, 1, [0], 1);
      const meta1 = await replica.commit(1, await predictRoot(replica));
      using dirty = new Bitmap(BLOCKS).setRange(0, BLOCKS);
      const err = await assertRejectsCode(
        (async () => {
          // 32 random blocks staged (128 KiB) and then applied into holes (128 KiB more)
          // do not fit in 256 KiB: the disk fills while staging or while preparing.
          await replica.beginGeneration(2, dirty, 0);
          const blocks = [];
          for (let b = 0; b < BLOCKS; b++) {
            const data = crypto.getRandomValues(new Uint8Array(BLOCK));
            blocks.push({ block: b, data, hash: blake3(data) });
          }
          await replica.stage(blocks);
          await replica.flush();
          await replica.commit(2, "00".repeat(32));
        })(),
        "NO_SPACE",
      );
      assert.match(err.message, /disk is full/);
      replica.close();
      const reopened = await new ReplicaStore(new DirectoryBackend(fs, `${mount}/store`)).open(
        "db1",
      );
      assert.equal(reopened.meta.committedGeneration, 1);
      assert.ok((await reopened.verify({ expectedRoot: meta1.merkleRoot })).ok);
      reopened.close();
    }),
});

seededTest(
  "readStaged: blocks staged since opening, checked; others and other generations null",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const replica = await seededReplica(fs, "/s");
    try {
      using dirty = new Bitmap(BLOCKS).setRange(4, 4);
      await replica.beginGeneration(2, dirty, Date.now());
      const data = prng.fill(new Uint8Array(BLOCK));
      const zero = new Uint8Array(BLOCK);
      await replica.stage([
        { block: 4, data, hash: blake3(data) },
        { block: 5, data: null },
        { block: 6, data: zero, hash: blake3(zero) },
      ]);
      for (const [block, expected] of [[4, data], [5, zero], [6, zero]] as const) {
        const staged = await replica.readStaged(2, block);
        assertBytesEqual(staged, expected, `block ${block}`);
      }
      assert.equal(await replica.readStaged(2, 7), null, "not received");
      assert.equal(await replica.readStaged(3, 4), null, "another generation");
      // A flipped byte in the record's payload is caught, never served.
      const log = await fs.open("/s/db1/staging/log", { write: true });
      const at = 48 + prng.int(BLOCK);
      const byte = new Uint8Array(1);
      await log.read(at, byte);
      byte[0] ^= 1;
      await log.write(at, byte);
      log.close();
      await assertRejectsCode(replica.readStaged(2, 4), "STORE_CORRUPT");
    } finally {
      replica.close();
    }
  },
);

/** A directory back end whose images keep snapshots, recording each call. */
function snapshottingBackend(
  fs: FileSystem,
  calls: string[],
  failing: "snapshot" | "prune" = "snapshot",
): ReplicaBackend {
  const inner = new DirectoryBackend(fs, "/s");
  let failNext = true;
  return {
    location: inner.location,
    list: () => inner.list(),
    create: (identity) => inner.create(identity),
    remove: (name) => inner.remove(name),
    volume(name) {
      const volume = inner.volume(name);
      return {
        name: volume.name,
        location: volume.location,
        overlayPath: volume.overlayPath,
        staging: volume.staging,
        readMeta: () => volume.readMeta(),
        writeMeta: (bytes) => volume.writeMeta(bytes),
        openManifest: (mode) => volume.openManifest(mode),
        lock: (mode) => volume.lock(mode),
        async openImage(mode) {
          const image = await volume.openImage(mode);
          let unflushed = false;
          return {
            sizeBytes: image.sizeBytes,
            writeWindow: image.writeWindow,
            read: (offset, into) => image.read(offset, into),
            write: (offset, data) => (unflushed = true, image.write(offset, data)),
            flush: () => image.flush().then(() => void (unflushed = false)),
            close: () => image.close(),
            async snapshotGeneration(generation: number) {
              const meta = JSON.parse(new TextDecoder().decode((await volume.readMeta())!));
              calls.push(
                `g${generation} after g${meta.committedGeneration}${unflushed ? " unflushed" : ""}`,
              );
              if (failing === "snapshot" && generation === 2 && failNext) {
                failNext = false;
                throw new Error("snapshot failed");
              }
            },
            pruneGenerations(generation: number) {
              // Runs beside the metadata write: which lands first is not fixed.
              calls.push(`prune g${generation}`);
              if (failing === "prune" && generation === 2 && failNext) {
                failNext = false;
                return Promise.reject(new Error("prune failed"));
              }
              return Promise.resolve();
            },
          };
        },
      };
    },
  };
}

Deno.test("a back end keeping snapshots gets one per commit, after the flush, before the metadata, again on replay, then prunes", async () => {
  const calls: string[] = [];
  const fs = new PowerCutFileSystem();
  const store = new ReplicaStore(snapshottingBackend(fs, calls));
  const replica = await store.init(newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK));
  await stageAll(replica, 1, [0, 1], 1);
  await replica.commit(1, await predictRoot(replica));
  await stageAll(replica, 2, [5], 2);
  const root2 = await predictRoot(replica);
  await assert.rejects(replica.commit(2, root2), /snapshot failed/);
  replica.close();
  const reopened = await store.open("db1");
  assert.equal(reopened.meta.committedGeneration, 2, "the logged commit was replayed");
  reopened.close();
  assert.deepEqual(calls, [
    "g1 after g0",
    "prune g1",
    "g2 after g1",
    "g2 after g1",
    "prune g2",
  ]);
});

Deno.test("a prune cut short after the metadata is finished by recovery, before the staging area goes", async () => {
  const calls: string[] = [];
  const fs = new PowerCutFileSystem();
  const store = new ReplicaStore(snapshottingBackend(fs, calls, "prune"));
  const replica = await store.init(newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK));
  await stageAll(replica, 1, [0, 1], 1);
  await replica.commit(1, await predictRoot(replica));
  await stageAll(replica, 2, [5], 2);
  await assert.rejects(replica.commit(2, await predictRoot(replica)), /prune failed/);
  replica.close();
  const reopened = await store.open("db1");
  assert.equal(reopened.meta.committedGeneration, 2);
  assert.equal(reopened.resumeInfo().staged, null, "the staging area went after the prune");
  reopened.close();
  assert.deepEqual(calls, [
    "g1 after g0",
    "prune g1",
    "g2 after g1",
    "prune g2",
    "prune g2",
  ]);
});

/** A directory back end whose staging areas count (and can fail) writes of `received`. */
function countingBackend(fs: FileSystem, state: { writes: number; fail: boolean }): ReplicaBackend {
  const inner = new DirectoryBackend(fs, "/s");
  return {
    location: inner.location,
    list: () => inner.list(),
    create: (identity) => inner.create(identity),
    remove: (name) => inner.remove(name),
    volume(name) {
      const volume = inner.volume(name);
      const staging = volume.staging;
      return {
        name: volume.name,
        location: volume.location,
        overlayPath: volume.overlayPath,
        readMeta: () => volume.readMeta(),
        writeMeta: (bytes) => volume.writeMeta(bytes),
        openImage: (mode) => volume.openImage(mode),
        openManifest: (mode) => volume.openManifest(mode),
        lock: (mode) => volume.lock(mode),
        staging: {
          location: staging.location,
          exists: () => staging.exists(),
          create: () => staging.create(),
          read: (record) => staging.read(record),
          write(record, bytes) {
            if (record !== "received") return staging.write(record, bytes);
            state.writes++;
            if (state.fail) {
              state.fail = false;
              return Promise.reject(new Error("received not written"));
            }
            return staging.write(record, bytes);
          },
          openLog: () => staging.openLog(),
          openHashes: () => staging.openHashes(),
          discard: () => staging.discard(),
        },
      };
    },
  };
}

Deno.test("a flush with nothing staged since the last one writes nothing; one after a failed flush writes again", async () => {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/s");
  const state = { writes: 0, fail: false };
  const store = new ReplicaStore(countingBackend(fs, state));
  const replica = await store.init(newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK));
  try {
    await stageAll(replica, 1, [0], 1);
    await replica.commit(1, await predictRoot(replica));
    await stageAll(replica, 2, [1, 2], 2);
    const afterStaging = state.writes;
    await replica.flush();
    assert.equal(state.writes, afterStaging, "nothing new: no write");
    const data = new Uint8Array(BLOCK).fill(3);
    using dirty = new Bitmap(BLOCKS).set(1).set(2).set(3);
    await replica.beginGeneration(2, dirty, Date.now());
    await replica.stage([{ block: 3, data, hash: blake3(data) }]);
    state.fail = true;
    await assert.rejects(replica.flush(), /received not written/);
    await replica.flush();
    assert.equal(state.writes, afterStaging + 2, "the failed flush is done again");
    replica.close();
    const reopened = await store.open("db1");
    try {
      assert.equal(reopened.resumeInfo().staged?.received.popcount(), 1, "block 3 is durable");
    } finally {
      reopened.close();
    }
  } finally {
    replica.close();
  }
});
