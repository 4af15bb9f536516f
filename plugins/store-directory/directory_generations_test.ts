import assert from "node:assert/strict";
import { ErrorCode } from "../../agent/errors.ts";
import { ReplicaExport } from "../../agent/export/replica_export.ts";
import { storeBackendFromSpec } from "../../agent/registry/store_plugins.ts";
import { keepsGenerations } from "../../agent/store/replica_backend.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
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
import { DirectoryBackend } from "./mod.ts";

const KEEP = 3;
const identity = () => newVolumeIdentity(KILL_VOLUME, KILL_SIZE, KILL_BLOCK);

async function newStore(keep = KEEP) {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/srv");
  await fs.syncDir("/");
  const backend = new DirectoryBackend(fs, "/srv/store", { keep });
  return { fs, backend, store: new ReplicaStore(backend) };
}

/** A store with `generations` committed generations of a seeded source, keeping `KEEP`. */
function withGenerations(
  generations: number,
  body: (t: {
    fs: PowerCutFileSystem;
    store: ReplicaStore;
    backend: DirectoryBackend;
    source: SeededSource;
  }) => Promise<void>,
): Promise<void> {
  return withSeed(async (prng) => {
    const t = await newStore();
    const source = new SeededSource(prng.nextU32());
    const replica = await t.store.init(identity());
    try {
      for (let g = 1; g <= generations; g++) await sendGeneration(replica, source, g);
    } finally {
      replica.close();
    }
    await body({ ...t, source });
  });
}

function kept(backend: DirectoryBackend) {
  const volume = backend.volume(KILL_VOLUME);
  assert.ok(keepsGenerations(volume), "a --keep 3 volume keeps generations");
  return volume;
}

Deno.test("--keep on a directory store: 0, a fraction and more than 1000 are refused", () => {
  assert.equal((storeBackendFromSpec("/srv/x", { keep: 4 }) as DirectoryBackend).keep, 4);
  assert.equal((storeBackendFromSpec("/srv/x", {}) as DirectoryBackend).keep, 1);
  for (const keep of [0, 2.5, 1001]) {
    assertThrowsCode(
      () => new DirectoryBackend(new PowerCutFileSystem(), "/srv/x", { keep }),
      ErrorCode.INVALID_ARGUMENT,
    );
  }
});

Deno.test("a store opened without --keep writes no undo log, still lists and serves what a --keep 3 serve kept, and prunes it as it commits", () =>
  withGenerations(4, async ({ fs, backend, source }) => {
    const plain = new DirectoryBackend(fs, backend.location);
    const store = new ReplicaStore(plain);
    const volume = kept(plain);
    assert.deepEqual((await volume.generations()).map((g) => g.generation), [2, 3, 4]);
    assertBytesEqual((await exported(store, 2)).bytes, source.image(2), "generation 2");
    const replica = await store.open(KILL_VOLUME);
    try {
      await sendGeneration(replica, source, 5);
    } finally {
      replica.close();
    }
    // Keeping 1: no log of generation 4, and the older ones are pruned.
    assert.deepEqual(await fs.readDir(`/srv/store/${KILL_VOLUME}/undo`), []);
    assert.deepEqual((await volume.generations()).map((g) => g.generation), [5]);
    await assertRejectsCode(store.rollback(KILL_VOLUME, 4), ErrorCode.VOLUME_NOT_FOUND);
  }));

Deno.test("--keep 3: the last 3 generations are kept (2 undo logs), listed with time and size; an export serves any of them exactly", () =>
  withGenerations(5, async ({ fs, store, source }) => {
    const [summary] = await store.summaries();
    const generations = summary.generations!;
    assert.deepEqual(generations.map((g) => g.generation), [3, 4, 5]);
    for (const g of generations) {
      assert.equal(g.sizeBytes, KILL_SIZE);
      assert.ok(Math.abs(Date.now() - g.createdAtMs) < 600_000, `${g.createdAtMs}`);
    }
    assert.deepEqual((await fs.readDir(`/srv/store/${KILL_VOLUME}/undo`)).sort(), ["g3", "g4"]);
    const last = await exported(store);
    assert.equal(last.meta.committedGeneration, 5);
    assertBytesEqual(last.bytes, source.image(5), "committed generation");
    for (const g of [3, 4]) {
      const older = await exported(store, g);
      assert.equal(older.meta.committedGeneration, g);
      assert.equal(older.meta.merkleRoot, source.root(g));
      assertBytesEqual(older.bytes, source.image(g), `generation ${g}`);
    }
    const gone = await assertRejectsCode(exported(store, 2), ErrorCode.VOLUME_NOT_FOUND);
    assert.match(gone.message, /generation 2 .* is not kept .*kept: 3, 4, 5/);
  }));

Deno.test("an export of a kept generation stays that generation while commits land, and fails typed once retention drops what it had not read", () =>
  withGenerations(5, async ({ store, source }) => {
    const current = await ReplicaExport.open({ store, volume: KILL_VOLUME });
    const older = await ReplicaExport.open({ store, volume: KILL_VOLUME, generation: 4 });
    const stale = await ReplicaExport.open({ store, volume: KILL_VOLUME, generation: 5 });
    try {
      const replica = await store.open(KILL_VOLUME);
      try {
        await sendGeneration(replica, source, 6);
        assertBytesEqual(await current.read(0, KILL_SIZE), source.image(5), "5 after 6 landed");
        await sendGeneration(replica, source, 7);
        assertBytesEqual(await older.read(0, KILL_SIZE), source.image(4), "4 after 7 landed");
        assertBytesEqual(await current.read(0, KILL_SIZE), source.image(5), "5 after 7 landed");
        // Generation 8 drops generation 5's undo log, which `stale` never opened.
        await sendGeneration(replica, source, 8);
        await assertRejectsCode(stale.read(0, KILL_SIZE), ErrorCode.VOLUME_NOT_FOUND);
        assertBytesEqual(await current.read(0, KILL_SIZE), source.image(5), "5 after 8 landed");
      } finally {
        replica.close();
      }
    } finally {
      await current.close();
      await older.close();
      await stale.close();
    }
  }));

Deno.test("rollback: refused while the replica is open; then the replica is exactly the older generation, later ones are gone, and syncing goes on from there", () =>
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
      assert.deepEqual((await kept(backend).generations()).map((g) => g.generation), [3]);
      await sendGeneration(replica, source, 4);
      await sendGeneration(replica, source, 5);
      assertBytesEqual(await headOf(backend), source.image(5), "generation 5 again");
    } finally {
      replica.close();
    }
    assertBytesEqual((await exported(store, 4)).bytes, source.image(4), "4 kept again");
  }));

Deno.test("a rollback cut short (record written, head rolled back or not) is finished by the next open: the replica is then exactly the generation rolled back to", () =>
  withGenerations(5, async ({ store, backend, source }) => {
    const volume = kept(backend);
    for (const [target, headRolledBack] of [[4, false], [3, true]] as const) {
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
  }));

Deno.test("a damaged undo log: listing and export fail STORE_CORRUPT naming it, and a rollback writes none of it", () =>
  withGenerations(4, async ({ fs, store, backend, source }) => {
    const undo = `/srv/store/${KILL_VOLUME}/undo`;
    // A damaged index (the metadata record, in the header): its checksum catches it.
    const g3 = await fs.open(`${undo}/g3`, { write: true });
    const original = new Uint8Array(2);
    await g3.read(30, original);
    await g3.write(30, new Uint8Array([original[0] ^ 0xff, original[1] ^ 0xff]));
    await g3.sync();
    const err = await assertRejectsCode(kept(backend).generations(), ErrorCode.STORE_CORRUPT);
    assert.match(err.message, /undo log .*g3 is damaged \(checksum mismatch\)/);
    await assertRejectsCode(exported(store, 3), ErrorCode.STORE_CORRUPT);
    await g3.write(30, original);
    await g3.sync();
    g3.close();
    assertBytesEqual((await exported(store, 3)).bytes, source.image(3), "repaired");
    // One byte of old block data (hash-checked), before the 40-byte trailer.
    const g2 = await fs.open(`${undo}/g2`, { write: true });
    const size = await g2.size();
    const byte = new Uint8Array(1);
    await g2.read(size - 100, byte);
    await g2.write(size - 100, new Uint8Array([byte[0] ^ 0xff]));
    await g2.sync();
    g2.close();
    const bad = await assertRejectsCode(store.rollback(KILL_VOLUME, 2), ErrorCode.STORE_CORRUPT);
    assert.match(bad.message, /undo\/g2.*nothing of it was written/);
    // The newer log was applied first; the damaged one left the head at generation 3.
    assertBytesEqual(await headOf(backend), source.image(3), "head stops at generation 3");
  }));

Deno.test("power cut at every write instant of a commit with --keep 3: the replica is at a committed generation and every kept generation reads back exactly", () =>
  withSeed(async (prng) => {
    const seed = prng.nextU32();
    let crashes = 0;
    for (let step = 0;; step++) {
      const { fs, store } = await newStore();
      const source = new SeededSource(seed);
      const replica = await store.init(identity());
      for (let g = 1; g <= 4; g++) await sendGeneration(replica, source, g);
      let finished = false;
      try {
        await sendGeneration(replica, source, 5, () => fs.crashAfter(step));
        finished = true;
      } catch (err) {
        assert.ok(fs.crashed, `step ${step} failed without a crash: ${err}`);
      }
      replica.close();
      if (finished) break;
      crashes++;
      fs.powerCut();
      const reopened = await store.open(KILL_VOLUME);
      try {
        const committed = reopened.meta.committedGeneration;
        assert.ok(committed === 4 || committed === 5, `step ${step}: ${committed}`);
        const expected = committed === 4 ? [2, 3, 4] : [3, 4, 5];
        const [summary] = await store.summaries();
        assert.deepEqual(summary.generations!.map((g) => g.generation), expected, `step ${step}`);
        for (const g of expected) {
          assertBytesEqual((await exported(store, g)).bytes, source.image(g), `step ${step}: ${g}`);
        }
        if (committed === 4) await sendGeneration(reopened, source, 5);
      } finally {
        reopened.close();
      }
      for (const g of [3, 4, 5]) {
        assertBytesEqual(
          (await exported(store, g)).bytes,
          source.image(g),
          `step ${step}: ${g} after`,
        );
      }
    }
    assert.ok(crashes >= 10, `only ${crashes} crash points were exercised`);
  }));

Deno.test("power cut at every write instant of a rollback: the next open leaves the replica exactly at the generation it had or, once the record is down, at the one rolled back to", () =>
  withSeed(async (prng) => {
    const seed = prng.nextU32();
    let crashes = 0;
    for (let step = 0;; step++) {
      const { fs, store, backend } = await newStore();
      const source = new SeededSource(seed);
      const replica = await store.init(identity());
      for (let g = 1; g <= 5; g++) await sendGeneration(replica, source, g);
      replica.close();
      fs.crashAfter(step);
      try {
        await store.rollback(KILL_VOLUME, 3);
        break;
      } catch (err) {
        assert.ok(fs.crashed, `step ${step} failed without a crash: ${err}`);
      }
      crashes++;
      fs.powerCut();
      const reopened = await store.open(KILL_VOLUME);
      const committed = reopened.meta.committedGeneration;
      try {
        assert.ok(committed === 5 || committed === 3, `step ${step}: ${committed}`);
        assertBytesEqual(await headOf(backend), source.image(committed), `step ${step}`);
        const ok = await reopened.verify({ expectedRoot: source.root(committed) });
        assert.ok(ok.ok, `step ${step}: manifest of ${committed}`);
      } finally {
        reopened.close();
      }
      if (committed === 5) await store.rollback(KILL_VOLUME, 3);
      assertBytesEqual(await headOf(backend), source.image(3), `step ${step}: rolled back`);
      assert.deepEqual((await kept(backend).generations()).map((g) => g.generation), [3]);
    }
    assert.ok(crashes >= 10, `only ${crashes} crash points were exercised`);
  }));
