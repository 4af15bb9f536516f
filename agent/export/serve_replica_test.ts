import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { nbdUri } from "../nbd/mod.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { syncLocal } from "../sync/local_sync.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { createSparseImage, needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { ErrorCode } from "../errors.ts";
import { openReplica } from "./serve_replica.ts";
import { serveReplica } from "./mod.ts";

const SIZE = 8 * 1024 * 1024;
const tools = await needTools(["nbdinfo", "nbdcopy", "qemu-io", "qemu-img"]);

function storeIn(dir: string): ReplicaStore {
  return new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), `${dir}/store`));
}

/** A source image with data in blocks 0 and 40..47, synced into a fresh store. */
async function syncedStore(dir: string): Promise<string> {
  const image = `${dir}/disk.img`;
  await createSparseImage(image, SIZE);
  const file = await Deno.open(image, { write: true });
  await file.write(new Uint8Array(1000).fill(7));
  await file.seek(40 * 65536, Deno.SeekMode.Start);
  await file.write(new Uint8Array(8 * 65536).fill(9));
  file.close();
  await syncInto(dir, image);
  return image;
}

/** Syncs `image` into the store of `dir` as volume `vm3` (the next generation). */
async function syncInto(dir: string, image: string): Promise<void> {
  await syncLocal({
    imagePath: image,
    storeDir: `${dir}/store`,
    volume: "vm3",
    stateDir: `${dir}/state`,
    fs: new DenoFileSystem(),
  });
}

Deno.test({
  name: "export: nbdinfo --list/--map and nbdcopy see the committed replica, read-only",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-export-" });
    try {
      const image = await syncedStore(dir);
      await using serving = await serveReplica({
        store: storeIn(dir),
        volume: "vm3",
        listen: [{ transport: "unix", path: `${dir}/e.sock` }, {
          transport: "tcp",
          hostname: "127.0.0.1",
          port: 0,
        }],
      });
      assert.equal(serving.generation, 1);
      const uri = nbdUri(serving.addresses[0], "vm3");
      const list = await runTool("nbdinfo", ["--list", `nbd+unix:///?socket=${dir}/e.sock`]);
      assert.match(list.stdout, /export="vm3"/);
      assert.match(list.stdout, /is_read_only: true/);
      const map = await runTool("nbdinfo", ["--map", uri]);
      const rows = map.stdout.trim().split("\n").map((l) => l.trim().split(/\s+/));
      assert.deepEqual(rows.map((r) => [Number(r[0]), Number(r[1]), r[3]]), [
        [0, 65536, "data"],
        [65536, 39 * 65536, "hole,zero"],
        [40 * 65536, 8 * 65536, "data"],
        [48 * 65536, SIZE - 48 * 65536, "hole,zero"],
      ]);
      await runTool("nbdcopy", [nbdUri(serving.addresses[1], "vm3"), `${dir}/copy.img`]);
      await runTool("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, `${dir}/copy.img`]);
      const write = await runTool("qemu-io", ["-f", "raw", "-c", "write 0 512", uri], -1);
      assert.notEqual(write.code, 0);
      assert.match(write.stderr + write.stdout, /Operation not permitted|read-only|Permission/i);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "export --writable: writes land in the overlay, survive a restart, never the replica",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-export-" });
    try {
      await syncedStore(dir);
      const replicaImage = `${dir}/store/vm3/image`;
      const before = await Deno.readFile(replicaImage);
      const listen = [{ transport: "unix" as const, path: `${dir}/w.sock` }];
      const uri = `nbd+unix:///vm3?socket=${dir}/w.sock`;
      {
        await using serving = await serveReplica({
          store: storeIn(dir),
          volume: "vm3",
          listen,
          writable: true,
        });
        assert.equal(serving.overlayPath, `${dir}/store/vm3.overlay`);
        await runTool("qemu-io", [
          "-f",
          "raw",
          "-c",
          "write -P 0x42 100 1000",
          "-c",
          "write -P 0x43 2621440 65536",
          "-c",
          "flush",
          uri,
        ]);
      }
      await using _again = await serveReplica({
        store: storeIn(dir),
        volume: "vm3",
        listen,
        writable: true,
      });
      const read = await runTool("qemu-io", [
        "-f",
        "raw",
        "-c",
        "read -P 0x07 0 100", // copied up from the replica around the write
        "-c",
        "read -P 0x42 100 1000",
        "-c",
        "read -P 0x43 2621440 65536",
        "-c",
        "read -P 0x09 2686976 65536",
        uri,
      ]);
      assert.doesNotMatch(read.stdout + read.stderr, /verification failed/i);
      assertBytesEqual(await Deno.readFile(replicaImage), before, "the replica image");
      await runTool("nbdinfo", ["--map", uri]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "export --writable: WRITE_ZEROES punches holes in the overlay, and nbdinfo --map " +
    "combines the overlay's holes with the replica's",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-export-" });
    try {
      await syncedStore(dir);
      const replicaImage = `${dir}/store/vm3/image`;
      const before = await Deno.readFile(replicaImage);
      const B = 65536;
      await using serving = await serveReplica({
        store: storeIn(dir),
        volume: "vm3",
        listen: [{ transport: "unix", path: `${dir}/z.sock` }],
        writable: true,
      });
      const uri = nbdUri(serving.addresses[0], "vm3");
      const io = await runTool("qemu-io", [
        "-f",
        "raw",
        ...[
          `write -z -u ${40 * B} ${4 * B}`, // replica data -> overlay holes
          `write -P 0x55 ${10 * B} ${B}`,
          "write -z -u 100 200", // partial: block 0 is copied up, then zeroed in part
          "flush",
          `read -P 0 ${40 * B} ${4 * B}`,
          `read -P 0x09 ${44 * B} ${4 * B}`,
          "read -P 0x07 0 100",
          "read -P 0 100 200",
          "read -P 0x07 300 700",
          `read -P 0x55 ${10 * B} ${B}`,
        ].flatMap((c) => ["-c", c]),
        uri,
      ]);
      assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i, io.stdout + io.stderr);
      const map = await runTool("nbdinfo", ["--map", uri]);
      const rows = map.stdout.trim().split("\n").map((l) => l.trim().split(/\s+/));
      assert.deepEqual(rows.map((r) => [Number(r[0]), Number(r[1]), r[3]]), [
        [0, B, "data"], // copied up into the overlay
        [B, 9 * B, "hole,zero"], // the replica's
        [10 * B, B, "data"], // the overlay's
        [11 * B, 33 * B, "hole,zero"], // the replica's, then the overlay's punched 40..43
        [44 * B, 4 * B, "data"], // the replica's
        [48 * B, SIZE - 48 * B, "hole,zero"],
      ]);
      const overlayBytes = (await Deno.stat(serving.overlayPath!)).blocks! * 512;
      assert.ok(overlayBytes <= 2 * B + 16 * 1024, `overlay holds ${overlayBytes} bytes`);
      assertBytesEqual(await Deno.readFile(replicaImage), before, "the replica image");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a writable export's overlay is refused over a later generation than it was written on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-export-" });
  try {
    const image = await syncedStore(dir);
    const opened = await openReplica({ store: storeIn(dir), volume: "vm3", writable: true });
    await opened.export.write!(3 * 65536 + 5, new Uint8Array(100).fill(0x42));
    await opened.export.flush!();
    await opened.close();
    const base = JSON.parse(await Deno.readTextFile(`${dir}/store/vm3.overlay.base`));
    assert.equal(base.generation, 1);
    assert.match(base.merkleRoot, /^[0-9a-f]{64}$/);
    // The source synced again (its VM ran on at the source): the replica is generation 2.
    const file = await Deno.open(image, { write: true });
    await file.write(new Uint8Array(65536).fill(5));
    file.close();
    await syncInto(dir, image);
    const err = await assertRejectsCode(
      openReplica({ store: storeIn(dir), volume: "vm3", writable: true }),
      ErrorCode.OVERLAY_STALE,
    );
    assert.match(err.message, /written over generation 1, and the replica is now at generation 2/);
    // Read-only, the new generation exports as ever; the overlay is untouched.
    const readOnly = await openReplica({ store: storeIn(dir), volume: "vm3" });
    assert.deepEqual(await readOnly.export.read(0, 4), new Uint8Array(4).fill(5));
    await readOnly.close();
    // Moved away, a new overlay starts over generation 2.
    for (const suffix of ["", ".map", ".base"]) {
      await Deno.rename(`${dir}/store/vm3.overlay${suffix}`, `${dir}/old.overlay${suffix}`);
    }
    const fresh = await openReplica({ store: storeIn(dir), volume: "vm3", writable: true });
    assert.deepEqual(await fresh.export.read(3 * 65536 + 5, 2), new Uint8Array(2));
    await fresh.close();
    const again = JSON.parse(await Deno.readTextFile(`${dir}/store/vm3.overlay.base`));
    assert.equal(again.generation, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
