import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { ReplicaStore } from "./replica_store.ts";
import type { ReplicaVolume } from "./replica_volume.ts";

// 64 KiB records: a log of BLOCKS of them spans several of the walk's 4 MiB pieces, with
// records (and zero records, 48 bytes) across the pieces' ends.
const BLOCK = 64 * 1024;
const BLOCKS = 160;

/** A replica at generation 1 (all zeros but block 0), with generation 2 staged: `content`. */
async function stagedReplica(
  fs: PowerCutFileSystem,
  prng: Prng,
): Promise<{ replica: ReplicaVolume; content: Map<number, Uint8Array | null> }> {
  await fs.mkdir("/s");
  const store = new ReplicaStore(new DirectoryBackend(fs, "/s"));
  const replica = await store.init(newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK));
  const one = new Uint8Array(BLOCK).fill(1);
  using first = new Bitmap(BLOCKS).set(0);
  await replica.beginGeneration(1, first, 1);
  await replica.stage([{ block: 0, data: one, hash: blake3(one) }]);
  await replica.commit(1, rootWith(replica, new Map([[0, one]])));
  // Generation 2: most blocks, in a seeded order, one in five a zero block.
  const content = new Map<number, Uint8Array | null>();
  const order = Array.from({ length: BLOCKS }, (_, b) => b).sort(() => prng.int(3) - 1);
  for (const block of order.slice(0, BLOCKS - 10)) {
    content.set(block, prng.int(5) === 0 ? null : prng.fill(new Uint8Array(BLOCK)));
  }
  using dirty = new Bitmap(BLOCKS);
  for (const block of content.keys()) dirty.set(block);
  await replica.beginGeneration(2, dirty, 2);
  const blocks = [...content].map(([block, data]) => {
    const bytes = data ?? new Uint8Array(BLOCK);
    return { block, data: bytes, hash: blake3(bytes) };
  });
  for (let at = 0; at < blocks.length; at += 7) {
    await replica.stage(blocks.slice(at, at + 7));
    await replica.flush();
  }
  return { replica, content };
}

/** The Merkle root of the image once `content` is laid over it (block 0 holds ones). */
function rootWith(replica: ReplicaVolume, content: Map<number, Uint8Array | null>): string {
  const entries = new Uint8Array(32 * BLOCKS);
  for (let block = 0; block < BLOCKS; block++) {
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
  "a log of several read pieces commits every record, across the pieces' ends",
  async (prng) => {
    const fs = new PowerCutFileSystem();
    const { replica, content } = await stagedReplica(fs, prng);
    try {
      await replica.commit(2, rootWith(replica, content));
      assert.equal(replica.meta.committedGeneration, 2);
      for (let block = 0; block < BLOCKS; block++) {
        const expected = content.get(block) ??
          (block === 0 && !content.has(0) ? new Uint8Array(BLOCK).fill(1) : new Uint8Array(BLOCK));
        assert.deepEqual(await replica.readCommitted(block), expected, `block ${block}`);
      }
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
