import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { holdOpen } from "../../fixtures/hold_open.ts";
import { applyWorkload } from "../../fixtures/workload.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { LIVE_DIRTY_FILE } from "../../plugins/tracker-nbd/nbd_tracker.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { openReplica } from "../export/serve_replica.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { syncLocal } from "../sync/local_sync.ts";
import { adoptOriginalImage, failBack, type FailBackOptions } from "./failback.ts";

const BLOCK = 64 * 1024;
const SIZE = 48 * 1024 * 1024;
const fs = new DenoFileSystem();

interface Site {
  root: string;
  image: string;
  agentState: string;
  storeB: ReplicaStore;
  backendA: DirectoryBackend;
  storeA: ReplicaStore;
}

/**
 * Site A's image synced to site B's store (the relocation's last generation), then
 * `overlayWrites` writes to B's overlay (what the VM wrote at B).
 */
async function relocated(prng: Prng, overlayWrites: number): Promise<Site> {
  const root = await Deno.makeTempDir({ prefix: "presync-failback-" });
  const image = `${root}/a.img`;
  const file = await fs.open(image, { create: true });
  await file.truncate(SIZE);
  await applyWorkload(prng, file, SIZE, BLOCK, 40);
  await file.sync();
  file.close();
  const agentState = `${root}/agent-state`;
  await syncLocal({
    imagePath: image,
    storeDir: `${root}/b`,
    volume: "vm",
    stateDir: agentState,
    blockSize: BLOCK,
    fs,
  });
  const storeB = new ReplicaStore(new DirectoryBackend(fs, `${root}/b`));
  const opened = await openReplica({ store: storeB, volume: "vm", writable: true });
  try {
    for (let i = 0; i < overlayWrites; i++) {
      const length = 1 + prng.int(4 * BLOCK);
      const offset = prng.int(SIZE - length + 1);
      const data = new Uint8Array(length);
      prng.fill(data);
      await opened.export.write!(offset, data);
    }
    // A long run, so that a fail-back spans several acknowledgement points.
    const run = new Uint8Array(20 * 1024 * 1024);
    prng.fill(run);
    await opened.export.write!(8 * BLOCK + 123, run);
    await opened.export.flush!();
  } finally {
    await opened.close();
  }
  const backendA = new DirectoryBackend(fs, `${root}/a-store`);
  return { root, image, agentState, storeB, backendA, storeA: new ReplicaStore(backendA) };
}

/** What the VM saw at B: replica + overlay. */
async function diskAtB(site: Site): Promise<Uint8Array> {
  const opened = await openReplica({ store: site.storeB, volume: "vm", writable: true });
  try {
    return await opened.export.read(0, SIZE);
  } finally {
    await opened.close();
  }
}

/** Adopts the original image of `site` as volume `vm` of its store A (as the operator would). */
function adopt(site: Site, extra: Partial<Parameters<typeof adoptOriginalImage>[0]> = {}) {
  return adoptOriginalImage({
    fs,
    volume: "vm",
    imagePath: site.image,
    agentStateDir: site.agentState,
    backend: site.backendA,
    ...extra,
  });
}

function options(site: Site, extra: Partial<FailBackOptions> = {}): FailBackOptions {
  return {
    fs,
    store: site.storeB,
    volume: "vm",
    stateDir: `${site.root}/failback-state`,
    connect: async () => {
      const replica = await site.storeA.open("vm");
      return { destination: replica, close: () => Promise.resolve(replica.close()) };
    },
    retry: () => Promise.resolve(),
    ...extra,
  };
}

async function assertFailedBack(site: Site): Promise<void> {
  const expected = await diskAtB(site);
  const actual = await Deno.readFile(site.image);
  assert.equal(actual.length, expected.length);
  assert.ok(actual.every((b, i) => b === expected[i]), "original image != replica + overlay");
  const replica = await site.storeA.open("vm");
  try {
    const report = await replica.verify();
    assert.ok(report.ok, `replica damaged: ${JSON.stringify(report.damaged)}`);
  } finally {
    replica.close();
  }
}

seededTest("fail-back sends only the overlay and leaves the original image equal", async (prng) => {
  const site = await relocated(prng, 30);
  try {
    // The nbd tracker's set saved at its last clean stop: the image is about to change
    // behind it, so the adoption drops it (its next start compares with the manifest).
    const saved = `${site.agentState}/${LIVE_DIRTY_FILE}`;
    await Deno.writeFile(saved, new Uint8Array(8));
    const adopted = await adopt(site);
    assert.equal(
      await fs.exists(saved),
      false,
      "the nbd tracker's saved set outlived the adoption",
    );
    assert.equal(adopted.generation, 1);
    assert.equal(adopted.divergedBlocks, 0);
    // A re-run (the operator starting it again) recognises its own adoption.
    const again = await adopt(site);
    assert.equal(again.already, true);
    const report = await failBack(options(site));
    assert.equal(report.generation, 2);
    assert.ok(report.blocks > 0 && report.blocks < SIZE / BLOCK / 2, `blocks ${report.blocks}`);
    assert.ok(report.bytesSent <= report.blocks * BLOCK);
    assert.equal((await site.storeA.readMeta("vm")).committedGeneration, 2);
    await assertFailedBack(site);
    // Done: running it again sends nothing.
    const rerun = await failBack(options(site));
    assert.equal(rerun.bytesSent, 0);
    assert.equal(rerun.generation, 2);
  } finally {
    await Deno.remove(site.root, { recursive: true });
  }
});

seededTest("fail-back resumes after a link cut and after a kill", async (prng) => {
  const site = await relocated(prng, 10);
  try {
    await adopt(site);
    // A cut link: retryable, retried by failBack itself.
    let flushes = 0;
    let retries = 0;
    const cut = await failBack(options(site, {
      retry: () => Promise.resolve(void retries++),
      hooks: {
        afterFlush: () => {
          if (++flushes === 1) {
            throw new PresyncError(ErrorCode.CONNECTION_LOST, "link cut", { retryable: true });
          }
        },
      },
    }));
    assert.equal(retries, 1);
    assert.ok(cut.alreadyStaged > 0, "the retry resent what was staged");
    await assertFailedBack(site);
  } finally {
    await Deno.remove(site.root, { recursive: true });
  }
  const killed = await relocated(prng, 10);
  try {
    await adopt(killed);
    // The process dies after the first acknowledgement point (a non-retryable stop here).
    await assert.rejects(
      failBack(options(killed, {
        hooks: {
          afterFlush: () => {
            throw new Error("killed");
          },
        },
      })),
      /killed/,
    );
    const resumed = await failBack(options(killed));
    assert.ok(resumed.alreadyStaged > 0);
    assert.ok(resumed.bytesSent < resumed.blocks * BLOCK);
    await assertFailedBack(killed);
  } finally {
    await Deno.remove(killed.root, { recursive: true });
  }
});

seededTest("an original image written after the relocation is refused", async (prng) => {
  const site = await relocated(prng, 5);
  try {
    const file = await fs.open(site.image, { write: true });
    await file.write(5 * BLOCK + 7, new Uint8Array([1, 2, 3]));
    file.close();
    await assertRejectsCode(
      adopt(site, { volume: "db" }),
      ErrorCode.VOLUME_MISMATCH,
    );
    const err = await assertRejectsCode(
      adopt(site),
      ErrorCode.FAILBACK_DIVERGED,
    );
    assert.match(err.message, /1 blocks differ \(first: block 5\).*--full/);
    assert.deepEqual(await site.backendA.list(), []);
    // Adopted anyway with --full: the overlay alone is refused, the full re-sync works.
    await adopt(site, { full: true });
    await assertRejectsCode(failBack(options(site)), ErrorCode.FAILBACK_DIVERGED);
    await Deno.remove(`${site.root}/failback-state`, { recursive: true });
    const full = await failBack(options(site, { full: true }));
    assert.equal(full.blocks, SIZE / BLOCK);
    await assertFailedBack(site);
  } finally {
    await Deno.remove(site.root, { recursive: true });
  }
});

seededTest(
  "an original image another process holds open (the VM still running there) is not adopted",
  async (prng) => {
    const site = await relocated(prng, 5);
    const vm = await holdOpen(site.image);
    try {
      const err = await assertRejectsCode(adopt(site), ErrorCode.STORE_BUSY);
      assert.match(err.message, new RegExp(`is open in sleep \\(pid ${vm.pid}\\): stop the VM`));
      assert.deepEqual(await site.backendA.list(), []);
      vm.kill("SIGKILL");
      await vm.status;
      assert.equal((await adopt(site)).generation, 1);
    } finally {
      try {
        vm.kill("SIGKILL");
      } catch {
        // Already ended (killed above).
      }
      await vm.status;
      await Deno.remove(site.root, { recursive: true });
    }
  },
);

seededTest("a malformed overlay map and an overlay in use are refused", async (prng) => {
  const site = await relocated(prng, 5);
  try {
    await adopt(site);
    const held = await openReplica({ store: site.storeB, volume: "vm", writable: true });
    try {
      await assertRejectsCode(failBack(options(site)), ErrorCode.STORE_BUSY);
    } finally {
      await held.close();
    }
    const map = `${site.root}/b/vm.overlay.map`;
    const bytes = await Deno.readFile(map);
    await Deno.writeFile(map, bytes.subarray(0, bytes.length - 3));
    await assertRejectsCode(failBack(options(site)), ErrorCode.STORE_CORRUPT);
    assert.equal((await site.storeA.readMeta("vm")).committedGeneration, 1);
  } finally {
    await Deno.remove(site.root, { recursive: true });
  }
});
