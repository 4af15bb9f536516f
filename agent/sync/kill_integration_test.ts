import assert from "node:assert/strict";
import { seededTest } from "../../fixtures/seeded.ts";
import { expectedHash, recordExpectedAndSync } from "../../fixtures/sync_rounds.ts";
import { hashImage } from "../../fixtures/workload.ts";
import { startSyncChild } from "../../fixtures/sync_child_process.ts";
import { Bitmap } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";

const KILLS = 50;
const BLOCK = 4096;
const SIZE = 4 * 1024 * 1024 + 3 * BLOCK + 5;

seededTest("kill -9 at 50 random instants: the replica is always a committed generation", async (
  prng,
) => {
  const root = await Deno.makeTempDir({ prefix: "presync-kill-" });
  const fs = new DenoFileSystem();
  const phases = { idle: 0, staging: 0, committing: 0 };
  try {
    const image = await fs.open(`${root}/source.img`, { create: true });
    await image.truncate(SIZE);
    await image.write(0, prng.fill(new Uint8Array(SIZE / 2)));
    image.close();
    for (let kill = 0; kill < KILLS; kill++) {
      const child = await startSyncChild(root, prng.nextU32(), BLOCK);
      await new Promise((resolve) => setTimeout(resolve, prng.int(400)));
      await child.kill();
      if (await fs.exists(`${root}/store/crash/staging/COMMIT`)) phases.committing++;
      else if (await fs.exists(`${root}/store/crash/staging`)) phases.staging++;
      else phases.idle++;
      if (!(await fs.exists(`${root}/store/crash/meta.json`))) continue;
      // Invariant 1: opening recovers, and the image is exactly its committed generation's.
      const replica = await new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)).open(
        "crash",
      );
      const committed = replica.meta.committedGeneration;
      const durable = replica.resumeInfo().staged;
      replica.close();
      const replicaImage = await fs.open(`${root}/store/crash/image`);
      const actual = await hashImage(replicaImage, SIZE);
      replicaImage.close();
      if (committed > 0) {
        assert.equal(
          actual,
          await expectedHash(fs, root, committed),
          `kill ${kill}, generation ${committed}`,
        );
      }
      // Invariant 2: resuming re-sends no block the replica had durably staged.
      const reports = await recordExpectedAndSync(fs, root, BLOCK);
      if (durable) {
        using sent = new Bitmap(durable.received.size);
        for (const r of reports.filter((r) => r.generation === durable.generation)) {
          for (const [start, length] of r.sentExtents) sent.setRange(start, length);
        }
        assert.ok(sent.and(durable.received).isEmpty(), `kill ${kill}: durable blocks re-sent`);
        durable.received.free();
      }
    }
    console.log(`kills by phase: ${JSON.stringify(phases)}`);
    assert.ok(phases.staging + phases.committing > 0, "no kill landed inside a generation");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
