import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { encodePatch } from "../codec/block_patch.ts";
import type { StagedBlock, StagedPatch } from "../sync/destination.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { ReplicaStore } from "./replica_store.ts";
import type { ReplicaVolume } from "./replica_volume.ts";

// 64 KiB records: a log of BLOCKS of them spans several of the walk's 4 MiB pieces, with
// records (and zero records, 48 bytes) across the pieces' ends.
const BLOCK = 64 * 1024;
const BLOCKS = 200;

/**
 * A patch of `base` at 1 to 4 seeded runs of whole 4 KiB pages or odd byte ranges, and the
 * block it makes.
 */
function seededPatch(prng: Prng, base: Uint8Array): { patch: Uint8Array; data: Uint8Array } {
  const data = base.slice();
  const runs: [number, number][] = [];
  let at = 0;
  for (let i = 1 + prng.int(4); i > 0 && at < data.length - 1; i--) {
    const offset = at + prng.int(Math.min(16384, data.length - at - 1));
    const length = 1 + prng.int(Math.min(prng.int(2) ? 4096 : 300, data.length - offset));
    prng.fill(data.subarray(offset, offset + length));
    runs.push([offset, length]);
    at = offset + length + 1;
  }
  return { patch: encodePatch(data, runs), data };
}

/**
 * A replica at generation 1 (all zeros but block 0), with generation 2 staged: `content`;
 * one block in three arrived as a patch over its committed copy (zeros, or block 0's ones).
 */
async function stagedReplica(
  fs: PowerCutFileSystem,
  prng: Prng,
  blockCount = BLOCKS,
): Promise<{ replica: ReplicaVolume; content: Map<number, Uint8Array | null>; logBytes: number }> {
  await fs.mkdir("/s");
  const store = new ReplicaStore(new DirectoryBackend(fs, "/s"));
  const replica = await store.init(newVolumeIdentity("db1", blockCount * BLOCK, BLOCK));
  const one = new Uint8Array(BLOCK).fill(1);
  using first = new Bitmap(blockCount).set(0);
  await replica.beginGeneration(1, first, 1);
  await replica.stage([{ block: 0, data: one, hash: blake3(one) }]);
  await replica.commit(1, rootWith(replica, new Map([[0, one]])));
  // Generation 2: most blocks, in a seeded order, one in five a zero block.
  const content = new Map<number, Uint8Array | null>();
  const order = Array.from({ length: blockCount }, (_, b) => b).sort(() => prng.int(3) - 1);
  for (const block of order.slice(0, blockCount - 10)) {
    content.set(block, prng.int(5) === 0 ? null : prng.fill(new Uint8Array(BLOCK)));
  }
  using dirty = new Bitmap(blockCount);
  for (const block of content.keys()) dirty.set(block);
  await replica.beginGeneration(2, dirty, 2);
  // What the log should hold: a 48-byte header per record, then the block, the patch and its
  // 32-byte digest, or nothing (a zero block).
  let logBytes = 0;
  const blocks = [...content].map(([block, data]): StagedBlock | StagedPatch => {
    if (data && prng.int(3) === 0) {
      const base = block === 0 ? one : new Uint8Array(BLOCK);
      const { patch, data: patched } = seededPatch(prng, base);
      content.set(block, patched);
      logBytes += 48 + 32 + patch.length;
      return { block, patch, hash: blake3(patched) };
    }
    logBytes += 48 + (data ? BLOCK : 0);
    const bytes = data ?? new Uint8Array(BLOCK);
    return { block, data: bytes, hash: blake3(bytes) };
  });
  for (let at = 0; at < blocks.length; at += 7) {
    const result = await replica.stage(blocks.slice(at, at + 7));
    assert.equal(result.staged, Math.min(7, blocks.length - at));
    await replica.flush();
  }
  return { replica, content, logBytes };
}

/** The Merkle root of the image once `content` is laid over it (block 0 holds ones). */
function rootWith(replica: ReplicaVolume, content: Map<number, Uint8Array | null>): string {
  const blocks = replica.identity.sizeBytes / BLOCK;
  const entries = new Uint8Array(32 * blocks);
  for (let block = 0; block < blocks; block++) {
    const data = content.has(block)
      ? content.get(block)
      : block === 0 && replica.meta.committedGeneration > 0
      ? new Uint8Array(BLOCK).fill(1)
      : null;
    if (data) entries.set(blake3(data), 32 * block);
  }
  return [...blake3(entries)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

seededTest(
  "a log of several read pieces commits every record, across the pieces' ends; patch records hold only their patch",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const { replica, content, logBytes } = await stagedReplica(fs, prng);
    try {
      const log = await fs.open("/s/db1/staging/log");
      assert.equal(await log.size(), logBytes);
      log.close();
      for (const [block, data] of content) {
        const staged = await replica.readStaged(2, block);
        assertBytesEqual(staged, data ?? new Uint8Array(BLOCK), `staged block ${block}`);
      }
      await replica.commit(2, rootWith(replica, content));
      assert.equal(replica.meta.committedGeneration, 2);
      await assertImage(replica, content, "committed");
    } finally {
      replica.close();
    }
  },
);

seededTest(
  "one flipped byte anywhere in a long log fails the commit, nothing applied",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const { replica, content } = await stagedReplica(fs, prng);
    const root = rootWith(replica, content);
    const before = replica.meta.merkleRoot;
    replica.close();
    const log = await fs.open("/s/db1/staging/log", { write: true });
    const at = prng.int(await log.size());
    const byte = new Uint8Array(1);
    await log.read(at, byte);
    byte[0] ^= 1 << prng.int(8);
    await log.write(at, byte);
    log.close();
    const reopened = await new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1");
    try {
      await assertRejectsCode(reopened.commit(2, root), "STORE_CORRUPT");
      assert.equal(reopened.meta.committedGeneration, 1);
      const check = await reopened.verify({ expectedRoot: before });
      assert.ok(check.ok, `flipped byte ${at}: ${JSON.stringify(check)}`);
    } finally {
      reopened.close();
    }
  },
);

seededTest(
  "a log cut short inside a later piece fails the commit, nothing applied",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const { replica, content } = await stagedReplica(fs, prng);
    const root = rootWith(replica, content);
    const before = replica.meta.merkleRoot;
    // The log loses its end behind the replica's back (the area still claims the whole length).
    const log = await fs.open("/s/db1/staging/log", { write: true });
    const size = await log.size();
    assert.ok(size > 5 << 20, `the log spans more than one piece: ${size} bytes`);
    await log.truncate(size - 1 - prng.int(size - (5 << 20)));
    log.close();
    try {
      await assertRejectsCode(replica.commit(2, root), "STORE_CORRUPT");
      assert.equal(replica.meta.committedGeneration, 1);
      const check = await replica.verify({ expectedRoot: before });
      assert.ok(check.ok, JSON.stringify(check));
    } finally {
      replica.close();
    }
  },
);

/**
 * Each block of `replica`'s image equals `content`'s (null: zeros), or when absent what
 * generation 1 left: zeros, block 0 ones.
 */
async function assertImage(
  replica: ReplicaVolume,
  content: Map<number, Uint8Array | null>,
  what: string,
): Promise<void> {
  for (let block = 0; block < replica.identity.sizeBytes / BLOCK; block++) {
    const expected = content.has(block)
      ? content.get(block) ?? new Uint8Array(BLOCK)
      : new Uint8Array(BLOCK).fill(block === 0 ? 1 : 0);
    assertBytesEqual(await replica.readCommitted(block), expected, `${what}: block ${block}`);
  }
}

seededTest(
  "a power cut at any step of a commit with patch records leaves the image at generation 1 or 2, never a mix",
  async (prng) => {
    // The same staged generation for every crash point.
    const seed = prng.int(2 ** 32);
    let step = 0;
    for (;; step++) {
      const fs = new PowerCutFileSystem();
      const { replica, content } = await stagedReplica(fs, new Prng(seed), 24);
      const root = rootWith(replica, content);
      fs.crashAfter(step);
      let finished = false;
      try {
        await replica.commit(2, root);
        finished = true;
      } catch (err) {
        assert.ok(fs.crashed, `step ${step}: failed without a crash: ${err}`);
      }
      replica.close();
      fs.powerCut();
      const reopened = await new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1");
      try {
        const generation = reopened.meta.committedGeneration;
        assert.ok(generation === 1 || generation === 2, `step ${step}: generation ${generation}`);
        if (finished) assert.equal(generation, 2);
        await assertImage(reopened, generation === 2 ? content : new Map(), `step ${step}`);
        if (generation === 1) {
          // Recovery kept the staged generation: it commits now, to the same blocks.
          await reopened.commit(2, root);
          await assertImage(reopened, content, `step ${step}, committed after recovery`);
        }
      } finally {
        reopened.close();
      }
      if (finished) break;
    }
    assert.ok(step >= 20, `only ${step} crash points were exercised`);
  },
);

seededTest(
  "a patch that does not rebuild its hash over the copy is listed to resend, a malformed one rejected; neither is staged",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const { replica, content } = await stagedReplica(fs, prng, 24);
    try {
      await replica.commit(2, rootWith(replica, content));
      using dirty = new Bitmap(24).setRange(0, 3);
      await replica.beginGeneration(3, dirty, 3);
      const base = await replica.readCommitted(0);
      const good = seededPatch(prng, base);
      // Built over another copy of block 1 than the replica holds.
      const other = seededPatch(prng, prng.fill(new Uint8Array(BLOCK)));
      const result = await replica.stage([
        { block: 0, patch: good.patch, hash: blake3(good.data) },
        { block: 1, patch: other.patch, hash: blake3(other.data) },
        { block: 2, patch: good.patch.subarray(0, 5), hash: blake3(good.data) },
      ]);
      assert.deepEqual(result, { staged: 1, duplicates: 0, rejected: [2], resend: [1] });
      const staged = await replica.readStaged(3, 0);
      assertBytesEqual(staged, good.data, "staged block 0");
      assert.equal(await replica.readStaged(3, 1), null);
      assert.equal(await replica.readStaged(3, 2), null);
    } finally {
      replica.close();
    }
  },
);
