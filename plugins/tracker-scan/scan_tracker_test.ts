import assert from "node:assert/strict";
import type { FileSystem } from "../../agent/fs/file_system.ts";
import { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { newVolumeIdentity, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { ScanTracker } from "./scan_tracker.ts";

const BLOCK = 4096;

async function setup(prng: Prng, blocks: number) {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/s");
  const image = await fs.open("/s/image", { create: true });
  await image.truncate(blocks * BLOCK);
  for (let i = 0; i < blocks / 3; i++) {
    await image.write(
      prng.int(blocks) * BLOCK + prng.int(BLOCK),
      new Uint8Array([1 + prng.int(255)]),
    );
  }
  image.close();
  const identity = newVolumeIdentity("scan", blocks * BLOCK, BLOCK);
  const manifest = await ManifestFile.open(fs, "/s/manifest", blocks, { create: true });
  return { fs, identity, manifest };
}

async function scan(fs: FileSystem, identity: VolumeIdentity, manifest: ManifestFile, extra = {}) {
  const tracker = new ScanTracker({
    imagePath: "/s/image",
    identity,
    manifest,
    baselineGeneration: 0,
    fs,
    ...extra,
  });
  const cut = await tracker.cut();
  const runs = [...cut.dirty.extents()];
  await cut.release();
  return runs;
}

seededTest(
  "hashing on worker threads finds exactly the blocks a single thread finds",
  async (prng) => {
    const { fs, identity, manifest } = await setup(prng, 3000);
    const single = await scan(fs, identity, manifest, { workers: 1 });
    const parallel = await scan(fs, identity, manifest, { workers: 2 });
    assert.ok(single.length > 0);
    assert.deepStrictEqual(parallel, single);
  },
);

/** `fs`, with `onImageRead` called before every read of the image. */
function watched(fs: FileSystem, onImageRead: (bytes: number) => void): FileSystem {
  return {
    open: async (path, options) => {
      const file = await fs.open(path, options);
      if (path !== "/s/image") return file;
      const read = file.read.bind(file);
      file.read = (offset, into) => {
        onImageRead(into.length);
        return read(offset, into);
      };
      return file;
    },
    rename: (from, to) => fs.rename(from, to),
    remove: (path) => fs.remove(path),
    mkdir: (path) => fs.mkdir(path),
    syncDir: (path) => fs.syncDir(path),
    exists: (path) => fs.exists(path),
    readDir: (path) => fs.readDir(path),
    allocatedBytes: (path) => fs.allocatedBytes(path),
    tryLock: (path, mode) => fs.tryLock(path, mode),
  };
}

seededTest("a scan killed halfway resumes from its checkpoint and finds the same blocks", async (
  prng,
) => {
  const { fs, identity, manifest } = await setup(prng, 6000);
  const expected = await scan(fs, identity, manifest, { workers: 1 });
  // Checkpoints every 4 MiB; the "process" dies on the 3rd of its 8 MiB reads.
  let reads = 0;
  const dying = watched(fs, () => {
    if (++reads === 3) throw new Error("killed");
  });
  const checkpoint = {
    checkpointPath: "/s/scan.checkpoint",
    checkpointEveryBytes: 4 * 1024 * 1024,
  };
  await assert.rejects(scan(dying, identity, manifest, { workers: 1, ...checkpoint }), /killed/);
  assert.ok(await fs.exists("/s/scan.checkpoint"));
  let resumedBytes = 0;
  const counting = watched(fs, (bytes) => resumedBytes += bytes);
  const resumed = await scan(counting, identity, manifest, { workers: 1, ...checkpoint });
  assert.deepStrictEqual(resumed, expected);
  assert.ok(resumedBytes < identity.sizeBytes, `resumed scan read ${resumedBytes} bytes`);
  assert.equal(await fs.exists("/s/scan.checkpoint"), false);
});
