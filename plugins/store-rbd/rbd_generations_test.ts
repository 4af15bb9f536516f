import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { ReplicaExport } from "../../agent/export/replica_export.ts";
import { NBD_STATE_HOLE } from "../../agent/nbd/nbd_constants.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { Bitmap, blake3, blockEntries } from "../../agent/core/mod.ts";
import { toHex } from "../../agent/hex.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { cephCli, needCeph, sharedCephCluster } from "../../fixtures/ceph.ts";
import { withSeed } from "../../fixtures/prng.ts";
import {
  exported,
  headOf,
  KILL_BLOCK,
  KILL_SIZE,
  KILL_VOLUME,
  SeededSource,
  sendGeneration,
} from "../../fixtures/seeded_generations.ts";
import { testRbdBackend } from "./_test_pool.ts";
import { RbdBackend } from "./rbd_backend.ts";

const ceph = await needCeph();
const KEEP = 3;
const identity = () => newVolumeIdentity(KILL_VOLUME, KILL_SIZE, KILL_BLOCK);

/** A store with `generations` committed generations of a seeded source, keeping `KEEP`. */
async function withGenerations(
  generations: number,
  body: (
    t: { store: ReplicaStore; backend: RbdBackend; source: SeededSource },
  ) => Promise<void>,
): Promise<void> {
  await withSeed(async (prng) => {
    const t = await testRbdBackend({ keep: KEEP });
    try {
      const store = new ReplicaStore(t.backend);
      const source = new SeededSource(prng.nextU32());
      const replica = await store.init(identity());
      try {
        for (let g = 1; g <= generations; g++) await sendGeneration(replica, source, g);
      } finally {
        replica.close();
      }
      await body({ store, backend: t.backend, source });
    } finally {
      await t.cleanup();
    }
  });
}

/** The blocks an export of `generation` reports as holes (NBD block status), in order. */
async function holesOf(
  store: ReplicaStore,
  volume: string,
  size: number,
  generation: number,
): Promise<number[]> {
  const view = await ReplicaExport.open({ store, volume, generation });
  try {
    const holes: number[] = [];
    for (let at = 0; at < size;) {
      for (const extent of await view.allocation(at, size - at)) {
        if (extent.flags & NBD_STATE_HOLE) {
          for (let b = at / KILL_BLOCK; b * KILL_BLOCK < at + extent.lengthBytes; b++) {
            holes.push(b);
          }
        }
        at += extent.lengthBytes;
      }
    }
    return holes;
  } finally {
    await view.close();
  }
}

Deno.test({
  name: "an export of an older generation reports the blocks that generation never wrote " +
    "as holes (the snapshot's data extents), not all data: its manifest is not kept",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      // 3 RBD objects (4 MiB) of 64 KiB blocks: generation 1 writes two blocks of object 0,
      // generation 2 two of object 1; object 2 is never written. The export serves
      // generation 1 from its snapshot, with generation 2 committed after it.
      const object = 4 << 20;
      const sparse = newVolumeIdentity("sparse", 3 * object, KILL_BLOCK);
      const perObject = object / KILL_BLOCK;
      const t = await testRbdBackend({ keep: 2 });
      try {
        const store = new ReplicaStore(t.backend);
        const replica = await store.init(sparse);
        let image = new Uint8Array(sparse.sizeBytes);
        const written: number[][] = [];
        try {
          for (const [generation, first] of [[1, 0], [2, perObject]]) {
            const blocks = [first, first + 1 + prng.int(perObject - 1)];
            written.push(blocks);
            using dirty = new Bitmap(3 * perObject);
            image = image.slice();
            for (const b of blocks) {
              dirty.set(b);
              prng.fill(image.subarray(b * KILL_BLOCK, (b + 1) * KILL_BLOCK));
            }
            await replica.beginGeneration(generation, dirty, generation);
            await replica.stage(blocks.map((block) => {
              const data = image.slice(block * KILL_BLOCK, (block + 1) * KILL_BLOCK);
              return { block, data, hash: blake3(data) };
            }));
            await replica.flush();
            await replica.commit(generation, toHex(blake3(blockEntries(image, KILL_BLOCK))));
          }
        } finally {
          replica.close();
        }
        // librbd reports data per RADOS object, from its start to its last byte written: a
        // coarser set than the blocks written, never a finer one.
        const check = async (generation: number, written: number[], holeFrom: number) => {
          const holes = await holesOf(store, "sparse", sparse.sizeBytes, generation);
          const what = `holes of generation ${generation}`;
          for (const b of written) assert.ok(!holes.includes(b), `${what}: block ${b} written`);
          for (let b = holeFrom; b < 3 * perObject; b++) {
            assert.ok(holes.includes(b), `${what}: block ${b} never written`);
          }
          const last = Math.max(...written);
          for (let b = last + 1; b < holeFrom; b++) assert.ok(holes.includes(b), `${what}: ${b}`);
        };
        await check(1, written[0], perObject);
        await check(2, [...written[0], ...written[1]], 2 * perObject);
      } finally {
        await t.cleanup();
      }
    }),
});

Deno.test({
  name: "--keep 3: the last 3 generations stay as snapshots, listed with time and size; an " +
    "export serves the committed snapshot (not the head) or any kept generation exactly",
  ignore: ceph.ignore,
  fn: () =>
    withGenerations(5, async ({ store, backend, source }) => {
      const [summary] = await store.summaries();
      const kept = summary.generations!;
      assert.deepEqual(kept.map((g) => g.generation), [3, 4, 5]);
      for (const g of kept) {
        assert.equal(g.sizeBytes, KILL_SIZE);
        assert.ok(Math.abs(Date.now() - g.createdAtMs) < 600_000, `${g.createdAtMs}`);
      }
      // Scribble over the head: the export reads the committed generation's snapshot.
      const head = await backend.volume(KILL_VOLUME).openImage("write");
      await head.write(0, new Uint8Array(KILL_BLOCK).fill(0xee));
      await head.flush();
      head.close();
      const last = await exported(store);
      assert.equal(last.meta.committedGeneration, 5);
      assertBytesEqual(last.bytes, source.image(5), "committed generation");
      const older = await exported(store, 4);
      assert.equal(older.meta.committedGeneration, 4);
      assert.equal(older.meta.merkleRoot, source.root(4));
      assertBytesEqual(older.bytes, source.image(4), "generation 4");
      const gone = await assertRejectsCode(exported(store, 2), ErrorCode.VOLUME_NOT_FOUND);
      assert.match(gone.message, /generation 2 .* is not kept .*kept: 3, 4, 5/);
    }),
});

Deno.test({
  name: "rollback: refused while the replica is open; then the replica is exactly the older " +
    "generation, later ones are gone, and syncing goes on from there",
  ignore: ceph.ignore,
  fn: () =>
    withGenerations(5, async ({ store, backend, source }) => {
      const open = await store.open(KILL_VOLUME);
      await assertRejectsCode(store.rollback(KILL_VOLUME, 4), ErrorCode.STORE_BUSY);
      open.close();
      await assertRejectsCode(store.rollback(KILL_VOLUME, 2), ErrorCode.VOLUME_NOT_FOUND);
      await assertRejectsCode(store.rollback(KILL_VOLUME, 6), ErrorCode.INVALID_ARGUMENT);
      await store.rollback(KILL_VOLUME, 3);
      const replica = await store.open(KILL_VOLUME);
      try {
        assert.equal(replica.meta.committedGeneration, 3);
        assert.equal(replica.meta.merkleRoot, source.root(3));
        assertBytesEqual(await headOf(backend), source.image(3), "head after rollback");
        assert.ok((await replica.verify({ expectedRoot: source.root(3) })).ok, "manifest");
        const kept = await backend.volume(KILL_VOLUME).generations();
        assert.deepEqual(kept.map((g) => g.generation), [3]);
        await sendGeneration(replica, source, 4);
        assertBytesEqual(await headOf(backend), source.image(4), "generation 4 again");
      } finally {
        replica.close();
      }
    }),
});

Deno.test({
  name: "a rollback cut short (record written, head rolled back or not) is finished by the " +
    "next open: the replica is then exactly the generation rolled back to",
  ignore: ceph.ignore,
  fn: () =>
    withGenerations(4, async ({ store, backend, source }) => {
      const volume = backend.volume(KILL_VOLUME);
      for (const [target, headRolledBack] of [[3, false], [2, true]] as const) {
        const record = (await volume.readGenerationMeta(target))!;
        await volume.staging.discard();
        await volume.staging.create();
        await volume.staging.write("rollback", record);
        if (headRolledBack) await volume.rollbackImage(target);
        const replica = await store.open(KILL_VOLUME);
        try {
          assert.equal(replica.meta.committedGeneration, target);
          assertBytesEqual(await headOf(backend), source.image(target), `rolled to ${target}`);
          assert.ok((await replica.verify({ expectedRoot: source.root(target) })).ok);
          assert.equal(await volume.staging.exists(), false);
        } finally {
          replica.close();
        }
      }
    }),
});

Deno.test({
  name: "a Ceph that is down fails with a retryable TIMEOUT naming the cluster, not a hang",
  ignore: ceph.ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-rbd-down-" });
    try {
      // A monitor address nothing listens on.
      await Deno.writeTextFile(`${dir}/ceph.conf`, "[global]\nmon host = 127.0.0.1:9\n");
      const backend = new RbdBackend({
        spec: { pool: "rbd", confPath: `${dir}/ceph.conf` },
        stateDir: dir,
        fs: new DenoFileSystem(),
        connect: { connectTimeoutMs: 2000 },
      });
      const store = new ReplicaStore(backend);
      const err = await assertRejectsCode(store.list(), ErrorCode.TIMEOUT);
      assert.equal(err.retryable, true);
      assert.match(err.message, /is the cluster up/);
      await assertRejectsCode(store.open("db1"), ErrorCode.TIMEOUT);
      await backend.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a pool over its quota: seeding a new replica fails with a retryable NO_SPACE, nothing " +
    "is committed, the other replica's export stays intact, and seeding ends once it is lifted",
  ignore: ceph.ignore,
  fn: () =>
    withGenerations(1, async ({ store, backend, source }) => {
      const pool = backend.location.slice("rbd:".length);
      const test = await sharedCephCluster();
      const replica = await store.init(newVolumeIdentity("second", KILL_SIZE, KILL_BLOCK));
      try {
        await cephCli(test, ["osd", "pool", "set-quota", pool, "max_bytes", String(1 << 20)]);
        // The quota is enforced once the mgr's statistics reach the mon.
        await untilQuotaEnforced(backend);
        const refused = await assertRejectsCode(
          sendGeneration(replica, source, 1),
          ErrorCode.NO_SPACE,
        );
        assert.equal(refused.retryable, true);
        assert.match(refused.message, /quota/);
        assert.equal(replica.meta.committedGeneration, 0);
      } finally {
        replica.close();
      }
      assert.equal((await store.readMeta("second")).committedGeneration, 0);
      const served = await exported(store);
      assertBytesEqual(served.bytes, source.image(1), "the other replica is served intact");
      await cephCli(test, ["osd", "pool", "set-quota", pool, "max_bytes", "0"]);
      const deadline = Date.now() + 90_000;
      for (;;) {
        const again = await store.open("second");
        try {
          await sendGeneration(again, source, 1);
          break;
        } catch (err) {
          if (!(err instanceof PresyncError && err.code === ErrorCode.NO_SPACE)) throw err;
          assert.ok(Date.now() < deadline, "the lifted quota was never seen");
          await new Promise((resolve) => setTimeout(resolve, 500));
        } finally {
          again.close();
        }
      }
      const image = await backend.volume("second").openGeneration(1);
      try {
        const bytes = new Uint8Array(KILL_SIZE);
        await image.read(0, bytes);
        assertBytesEqual(bytes, source.image(1), "seeded once the quota is lifted");
      } finally {
        image.close();
      }
    }),
});

/** Writes to a scratch image of the back end's pool until the pool's quota refuses one. */
async function untilQuotaEnforced(backend: RbdBackend): Promise<void> {
  const pool = await backend.pool();
  await pool.createImage("quota-probe", 64 << 20);
  const probe = await pool.openImage("quota-probe");
  try {
    const deadline = Date.now() + 90_000;
    for (let i = 0;; i++) {
      assert.ok(Date.now() < deadline, "the quota was never enforced");
      try {
        await probe.write((i % 64) << 20, new Uint8Array(1 << 20).fill(1));
        await probe.flush();
      } catch (err) {
        if (err instanceof PresyncError && err.code === ErrorCode.NO_SPACE) return;
        throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await probe.close();
  }
}

Deno.test({
  name: "QEMU reads a committed generation straight from its snapshot " +
    "(rbd:POOL/presync-VOL@presync-gN, what a VM boots from)",
  ignore: ceph.ignore,
  fn: () =>
    withGenerations(2, async ({ backend, source }) => {
      const pool = backend.location.slice("rbd:".length);
      const { confPath } = await sharedCephCluster();
      const dir = await Deno.makeTempDir({ prefix: "presync-rbd-qemu-" });
      try {
        const out = await new Deno.Command("timeout", {
          args: [
            "120",
            "qemu-img",
            "convert",
            "-f",
            "raw",
            `rbd:${pool}/presync-${KILL_VOLUME}@presync-g1:conf=${confPath}`,
            "-O",
            "raw",
            `${dir}/g1.raw`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stderr = new TextDecoder().decode(out.stderr);
        assert.ok(out.success, `qemu-img convert failed (no rbd support in QEMU?): ${stderr}`);
        const bytes = await Deno.readFile(`${dir}/g1.raw`);
        assertBytesEqual(bytes, source.image(1), "generation 1 as QEMU reads it");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
});
