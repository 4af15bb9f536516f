import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { applyWorkload, hashImage } from "../../fixtures/workload.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { syncLocal } from "./local_sync.ts";

interface Setup {
  fs: FileSystem;
  root: string;
  image: string;
  sizeBytes: number;
  blockSize: number;
}

const options = (s: Setup) => ({
  imagePath: s.image,
  storeDir: `${s.root}/store`,
  volume: "vm-1",
  stateDir: `${s.root}/state`,
  blockSize: s.blockSize,
  fs: s.fs,
});

async function makeImage(s: Setup, prng: Prng): Promise<void> {
  const image = await s.fs.open(s.image, { create: true });
  await image.truncate(s.sizeBytes);
  await applyWorkload(prng, image, s.sizeBytes, s.blockSize, 20);
  await image.sync();
  image.close();
}

async function mutate(s: Setup, prng: Prng, writes: number): Promise<void> {
  const image = await s.fs.open(s.image, { write: true });
  await applyWorkload(prng, image, s.sizeBytes, s.blockSize, writes);
  await image.sync();
  image.close();
}

async function hashFile(fs: FileSystem, path: string, sizeBytes: number): Promise<string> {
  const file = await fs.open(path);
  try {
    return await hashImage(file, sizeBytes);
  } finally {
    file.close();
  }
}

seededTest("random workloads: after each commit the replica equals the source at the cut", async (
  prng,
) => {
  const root = await Deno.makeTempDir({ prefix: "presync-sync-" });
  try {
    // A size that is not a multiple of the block size: the last block is short.
    const s: Setup = {
      fs: new DenoFileSystem(),
      root,
      image: `${root}/source.img`,
      sizeBytes: 4 * 1024 * 1024 + 4096 * 3 + 123,
      blockSize: 4096,
    };
    await makeImage(s, prng);
    for (let round = 1; round <= 8; round++) {
      const expected = await hashFile(s.fs, s.image, s.sizeBytes);
      const [report] = await syncLocal(options(s));
      assert.equal(report.generation, round);
      assert.equal(await hashFile(s.fs, `${root}/store/vm-1/image`, s.sizeBytes), expected);
      const replica = await new ReplicaStore(new DirectoryBackend(s.fs, `${root}/store`)).open(
        "vm-1",
      );
      try {
        const check = await replica.verify({
          sourceImage: s.image,
          expectedRoot: report.merkleRoot,
        });
        assert.ok(check.ok, JSON.stringify(check));
        assert.equal(replica.meta.committedGeneration, round);
      } finally {
        replica.close();
      }
      await mutate(s, prng, 1 + prng.int(30));
    }
    // An unchanged source makes an empty generation: nothing moves.
    const [idle] = await syncLocal(options(s));
    const [again] = await syncLocal(options(s));
    assert.equal(again.blocksSent, 0, JSON.stringify(idle));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

seededTest("only changed blocks move, and zero blocks travel as markers", async (prng) => {
  const fs = new PowerCutFileSystem();
  const s: Setup = {
    fs,
    root: "/w",
    image: "/w/source.img",
    sizeBytes: 256 * 4096,
    blockSize: 4096,
  };
  await fs.mkdir("/w");
  await makeImage(s, prng);
  await syncLocal(options(s));
  const image = await fs.open(s.image, { write: true });
  await image.write(10 * 4096 + 5, new Uint8Array([7]));
  await image.write(20 * 4096, new Uint8Array(4096)); // zero a whole block
  await image.write(30 * 4096, new Uint8Array(4096).fill(9));
  image.close();
  const [report] = await syncLocal(options(s));
  const zeroWasAlreadyZero = report.blocksSent === 2;
  assert.deepStrictEqual(
    report.sentExtents,
    zeroWasAlreadyZero ? [[10, 1], [30, 1]] : [[10, 1], [20, 1], [30, 1]],
  );
  assert.equal(report.bytesSent, 2 * 4096);
  assert.equal(report.zeroBlocks, zeroWasAlreadyZero ? 0 : 1);
});

seededTest("a power cut at every step of a sync leaves a committed generation and resumes", async (
  prng,
) => {
  // The source and the store share one simulated disk; the image itself is synced.
  const base = new PowerCutFileSystem();
  const s: Setup = {
    fs: base,
    root: "/w",
    image: "/w/source.img",
    sizeBytes: 40 * 4096 + 77,
    blockSize: 4096,
  };
  await base.mkdir("/w");
  await base.syncDir("/");
  await makeImage(s, prng);
  await base.syncDir("/w");
  const committedHashes = new Map<number, string>([[0, await hashZeros(s.sizeBytes)]]);
  await syncLocal(options(s));
  committedHashes.set(1, await hashFile(base, s.image, s.sizeBytes));
  let crashes = 0;
  for (let step = 0;; step++) {
    await mutate(s, prng, 1 + prng.int(6));
    const target = await hashFile(base, s.image, s.sizeBytes);
    const store = new ReplicaStore(new DirectoryBackend(base, `${s.root}/store`));
    const before = await store.open("vm-1");
    const next = before.meta.committedGeneration + 1;
    before.close();
    // Generations next and next+1 (a resumed one plus a new, empty one) show this image.
    committedHashes.set(next, target);
    committedHashes.set(next + 1, target);
    base.crashAfter(step);
    let finished = false;
    try {
      await syncLocal(options(s));
      finished = true;
    } catch (err) {
      assert.ok(base.crashed, `failed without a crash at step ${step}: ${err}`);
    }
    if (finished) break;
    crashes++;
    base.powerCut();
    // Invariant 1: the replica equals exactly the image of its committed generation.
    const replica = await store.open("vm-1");
    const committed = replica.meta.committedGeneration;
    const durable = replica.resumeInfo().staged;
    replica.close();
    const actual = await hashFile(base, `${s.root}/store/vm-1/image`, s.sizeBytes);
    assert.equal(actual, committedHashes.get(committed), `step ${step}: generation ${committed}`);
    // Invariant 2: resuming re-sends nothing the replica durably staged.
    const reports = await syncLocal(options(s));
    if (durable) {
      using sent = new Bitmap(durable.received.size);
      for (const r of reports.filter((r) => r.generation === durable.generation)) {
        for (const [start, length] of r.sentExtents) sent.setRange(start, length);
      }
      assert.ok(sent.and(durable.received).isEmpty(), `step ${step}: durable blocks re-sent`);
      durable.received.free();
    }
    assert.equal(await hashFile(base, `${s.root}/store/vm-1/image`, s.sizeBytes), target);
  }
  assert.ok(crashes >= 50, `only ${crashes} crash points were exercised`);
});

async function hashZeros(sizeBytes: number): Promise<string> {
  const fs = new PowerCutFileSystem();
  const file = await fs.open("/zeros", { create: true });
  await file.truncate(sizeBytes);
  return hashImage(file, sizeBytes);
}

seededTest("a resized or replaced source, or another block size, is refused by name", async (
  prng,
) => {
  const fs = new PowerCutFileSystem();
  const s: Setup = {
    fs,
    root: "/w",
    image: "/w/source.img",
    sizeBytes: 64 * 4096,
    blockSize: 4096,
  };
  await fs.mkdir("/w");
  await makeImage(s, prng);
  const [first] = await syncLocal(options(s));
  const image = await fs.open(s.image, { write: true });
  await image.truncate(s.sizeBytes + 4096);
  image.close();
  const resized = await assertRejectsCode(syncLocal(options(s)), "VOLUME_MISMATCH");
  assert.match(resized.message, /now 266240 bytes but volume `vm-1` was initialised at 262144/);
  const again = await fs.open(s.image, { write: true });
  await again.truncate(s.sizeBytes);
  again.close();
  // A new source state (a re-initialised or replaced source) has a new UUID.
  const replaced = await assertRejectsCode(
    syncLocal({ ...options(s), stateDir: "/w/state-new" }),
    "VOLUME_MISMATCH",
  );
  assert.match(replaced.message, /uuid is .* re-initialised or replaced/);
  const otherBlocks = await assertRejectsCode(
    syncLocal({ ...options(s), stateDir: "/w/state-8k", blockSize: 8192 }),
    "VOLUME_MISMATCH",
  );
  assert.match(otherBlocks.message, /block size is 4096 here but 8192/);
  const replica = await new ReplicaStore(new DirectoryBackend(fs, "/w/store")).open("vm-1");
  try {
    assert.equal(replica.meta.committedGeneration, 1);
    assert.ok((await replica.verify({ expectedRoot: first.merkleRoot })).ok);
  } finally {
    replica.close();
  }
});
