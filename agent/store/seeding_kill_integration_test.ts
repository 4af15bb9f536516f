import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { expectedHash, recordExpectedAndSync } from "../../fixtures/sync_rounds.ts";
import { hashImage } from "../../fixtures/workload.ts";
import { startSyncChild } from "../../fixtures/sync_child_process.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode } from "../errors.ts";
import { ReplicaExport } from "../export/replica_export.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "./replica_store.ts";

const KILLS = 10;
const BLOCK = 4096;
const SIZE = 8 * 1024 * 1024 + 5;

seededTest(
  "kill -9 while seeding: never a generation the replica lacks, and seeding resumes",
  async (
    prng,
  ) => {
    const fs = new DenoFileSystem();
    const seen = { initialising: 0, committed: 0, empty: 0 };
    for (let kill = 0; kill < KILLS; kill++) {
      const root = await Deno.makeTempDir({ prefix: "presync-seed-kill-" });
      try {
        const image = await fs.open(`${root}/source.img`, { create: true });
        await image.truncate(SIZE);
        await image.write(0, prng.fill(new Uint8Array(SIZE - 5)));
        image.close();
        const zeros = await fs.open(`${root}/zeros.img`, { create: true });
        await zeros.truncate(SIZE);
        const zeroHash = await hashImage(zeros, SIZE);
        zeros.close();
        const child = await startSyncChild(root, prng.nextU32(), BLOCK);
        // The first generation (all 8 MiB) is seeded in place: once its staging area
        // exists, kill somewhere inside it (or just after).
        const header = `${root}/store/crash/staging/header.json`;
        const deadline = Date.now() + 30_000;
        while (!(await fs.exists(header)) && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        // The first kill lands at once, surely inside the seeding (the header comes first).
        const delayMs = kill === 0 ? 0 : prng.int(120);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        await child.kill();
        const store = new ReplicaStore(new DirectoryBackend(fs, `${root}/store`));
        if (!(await store.list()).includes("crash")) continue;
        const replica = await store.open("crash");
        const committed = replica.meta.committedGeneration;
        const initialising = replica.initialising;
        const durable = replica.resumeInfo().staged;
        replica.close();
        const replicaImage = await fs.open(`${root}/store/crash/image`);
        const actual = await hashImage(replicaImage, SIZE);
        replicaImage.close();
        if (initialising) {
          seen.initialising++;
          assert.equal(committed, 0, `kill ${kill}: initialising after a commit`);
          await assertRejectsCode(
            ReplicaExport.open({ store, volume: "crash" }),
            ErrorCode.VOLUME_INITIALISING,
          );
        } else if (committed === 0) {
          seen.empty++;
          assert.equal(actual, zeroHash, `kill ${kill}: generation 0 is all zeros`);
        } else {
          seen.committed++;
          assert.equal(actual, await expectedHash(fs, root, committed), `kill ${kill}`);
        }
        // Seeding resumes: no durably seeded block is sent again, and the result is exact.
        const reports = await recordExpectedAndSync(fs, root, BLOCK);
        if (durable) {
          using sent = new Bitmap(durable.received.size);
          for (const r of reports.filter((r) => r.generation === durable.generation)) {
            for (const [start, length] of r.sentExtents) sent.setRange(start, length);
          }
          assert.ok(sent.and(durable.received).isEmpty(), `kill ${kill}: durable blocks re-sent`);
          durable.received.free();
        }
        const after = await store.open("crash");
        const final = after.meta.committedGeneration;
        assert.ok((await after.verify({ sourceImage: `${root}/source.img` })).ok, `kill ${kill}`);
        after.close();
        assert.ok(final >= 1);
      } finally {
        await Deno.remove(root, { recursive: true });
      }
    }
    console.log(`kills while: ${JSON.stringify(seen)}`);
    assert.ok(seen.initialising > 0, "no kill landed inside the seeding");
  },
);
