import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { Bitmap } from "../../agent/core/mod.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { type NbdAddress, nbdUri } from "../../agent/nbd/mod.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { DirectoryBackend } from "../store-directory/mod.ts";
import type { ReplicaVolume } from "../../agent/store/replica_volume.ts";
import { sendGeneration } from "../../agent/sync/send_generation.ts";
import type { Cut } from "../../agent/tracker.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { createSparseImage, needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { createNbdTracker, type NbdTracker } from "./mod.ts";

const SIZE = 16 * 1024 * 1024;
const BLOCK = 64 * 1024;
const tools = await needTools(["qemu-io", "qemu-img", "nbdinfo"]);

interface Rig {
  dir: string;
  image: string;
  address: NbdAddress;
  uri: string;
  tracker: NbdTracker;
  state: SourceState;
  replica: ReplicaVolume;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A fresh all-zero image served by an NBD tracker, its source state and an empty replica. */
async function rig(name = "vm1"): Promise<Rig> {
  const dir = await Deno.makeTempDir({ prefix: "presync-nbd-tracker-" });
  const fs = new DenoFileSystem();
  const image = `${dir}/disk.img`;
  await createSparseImage(image, SIZE);
  const identity = newVolumeIdentity(name, SIZE, BLOCK);
  const state = await SourceState.init(fs, `${dir}/state`, identity);
  const replica = await new ReplicaStore(new DirectoryBackend(fs, `${dir}/store`)).init(identity);
  using nothing = new Bitmap(SIZE / BLOCK);
  const tracker = await createNbdTracker({
    imagePath: image,
    identity,
    stateDir: `${dir}/state`,
    listen: [{ transport: "unix", path: `${dir}/nbd.sock` }],
    initialDirty: nothing, // image and replica both start all zeros
  });
  const address = tracker.addresses[0];
  return {
    dir,
    image,
    address,
    uri: nbdUri(address, name),
    tracker,
    state,
    replica,
    async [Symbol.asyncDispose]() {
      await tracker.close();
      replica.close();
      state.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function qemuIo(uri: string, ...commands: string[]) {
  return runTool("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri]);
}

/** Cuts, records, sends and commits one generation; `wrap` may intercept the cut's reads. */
async function syncOnce(r: Rig, wrap: (cut: Cut) => Cut = (c) => c) {
  const cut = await r.tracker.cut();
  try {
    await r.state.recordCut(cut.dirty, Date.now());
    const report = await sendGeneration(r.state, wrap(cut), r.replica);
    const sent = [...report.sent.extents()];
    report.sent.free();
    return { report, sent };
  } finally {
    await cut.release();
  }
}

async function assertSameImage(a: string, b: string): Promise<void> {
  const out = await runTool("qemu-img", ["compare", "-f", "raw", "-F", "raw", a, b], -1);
  assert.equal(out.code, 0, `qemu-img compare ${a} ${b}: ${out.stdout}${out.stderr}`);
  assert.match(out.stdout, /Images are identical/);
}

Deno.test({
  name: "qemu-io writes through the NBD tracker: exactly the written blocks are marked, " +
    "and after a sync qemu-img compare says source and replica are identical",
  ...tools,
  async fn() {
    await using r = await rig();
    await qemuIo(
      r.uri,
      "write -P 0xa1 0 4096", // block 0
      "write -P 0xb2 200000 100000", // blocks 3..4 (200000..299999)
      "write -z 1048576 131072", // blocks 16..17, zeroes over zeros: still a change
      `write -P 0xc3 ${SIZE - 512} 512`, // last block
      "flush",
    );
    assert.equal(r.tracker.dirtyCount(), 1 + 2 + 2 + 1);
    const { report, sent } = await syncOnce(r);
    assert.deepEqual(sent, [[0, 1], [3, 2], [16, 2], [255, 1]]);
    assert.equal(report.zeroBlocks, 2);
    assert.equal(r.tracker.dirtyCount(), 0);
    await assertSameImage(r.image, `${r.dir}/store/vm1/image`);

    // A second generation carries only what was written since the first cut.
    await qemuIo(r.uri, "write -P 0xd4 655360 65536", "discard 2097152 65536");
    const second = await syncOnce(r);
    assert.deepEqual(second.sent, [[10, 1], [32, 1]]);
    await assertSameImage(r.image, `${r.dir}/store/vm1/image`);
    const read = await qemuIo(r.uri, "read -P 0xd4 655360 65536", "read -P 0xb2 200000 100000");
    assert.doesNotMatch(read.stdout + read.stderr, /Pattern verification failed/);
  },
});

Deno.test({
  name: "writes during an in-flight generation: the committed replica equals the image as " +
    "of the cut, not a mix",
  ...tools,
  async fn() {
    await using r = await rig();
    await qemuIo(
      r.uri,
      "write -P 0x11 0 1048576", // blocks 0..15
      "write -P 0x22 4194304 524288", // blocks 64..71
    );
    const cut = await r.tracker.cut();
    // The image as of the cut (nothing writes between the cut and this copy).
    await Deno.copyFile(r.image, `${r.dir}/at-cut.img`);
    let wrote = false;
    const racing: Cut = {
      dirty: cut.dirty,
      pointInTime: cut.pointInTime,
      // The VM overwrites the whole generation after the cut, before the sender reads it.
      async read(first, count) {
        if (!wrote) {
          wrote = true;
          await qemuIo(
            r.uri,
            "write -P 0x33 0 1048576",
            "write -P 0x44 4194304 524288",
            "write -z 65536 65536",
          );
        }
        return cut.read(first, count);
      },
      release: () => cut.release(),
    };
    try {
      assert.equal(cut.pointInTime, true);
      await r.state.recordCut(cut.dirty, Date.now());
      const report = await sendGeneration(r.state, racing, r.replica);
      report.sent.free();
    } finally {
      await cut.release();
    }
    assert.ok(wrote);
    await assertSameImage(`${r.dir}/at-cut.img`, `${r.dir}/store/vm1/image`);
    const differs = await runTool(
      "qemu-img",
      ["compare", "-f", "raw", "-F", "raw", r.image, `${r.dir}/store/vm1/image`],
      1,
    );
    assert.match(differs.stdout, /mismatch/i);
    // The overwritten blocks are the next generation; after it, the replica catches up.
    assert.equal(r.tracker.dirtyCount(), 16 + 8);
    await syncOnce(r);
    await assertSameImage(r.image, `${r.dir}/store/vm1/image`);
  },
});

Deno.test({
  name: "a writer running concurrently with the send never tears the generation",
  ...tools,
  async fn() {
    await using r = await rig();
    await qemuIo(r.uri, "write -P 0x55 0 8388608");
    const cut = await r.tracker.cut();
    await Deno.copyFile(r.image, `${r.dir}/at-cut.img`);
    try {
      await r.state.recordCut(cut.dirty, Date.now());
      const writer = qemuIo(
        r.uri,
        ...Array.from(
          { length: 32 },
          (_, i) => `write -P 0x${(0x60 + i).toString(16)} ${i * 262144} 262144`,
        ),
      );
      const report = await sendGeneration(r.state, cut, r.replica);
      report.sent.free();
      await writer;
    } finally {
      await cut.release();
    }
    await assertSameImage(`${r.dir}/at-cut.img`, `${r.dir}/store/vm1/image`);
  },
});

Deno.test({
  name: "zeroing during an open cut: only the cut's blocks that hold data are copied aside, " +
    "the image is left unallocated, the replica equals the cut and zeros travel as zero blocks",
  ...tools,
  async fn() {
    await using r = await rig();
    const MiB = 1024 * 1024;
    await qemuIo(r.uri, `write -P 0x11 0 ${4 * MiB}`, `write -P 0x22 ${8 * MiB} ${MiB}`);
    await syncOnce(r);
    // The next generation: blocks 0..15 rewritten, blocks 32..47 zeroed (holes now).
    await qemuIo(r.uri, `write -P 0x33 0 ${MiB}`, `write -z -u ${2 * MiB} ${MiB}`, "flush");
    const cut = await r.tracker.cut();
    await Deno.copyFile(r.image, `${r.dir}/at-cut.img`);
    try {
      assert.deepEqual([...cut.dirty.extents()], [[0, 16], [32, 16]]);
      // The VM zeroes the whole disk while the cut is unreleased.
      await qemuIo(r.uri, `write -z -u 0 ${SIZE}`, "flush");
      assert.deepEqual(
        r.tracker.preservedBytes(),
        { memory: 16 * BLOCK, spilled: 0 },
        "blocks 0..15 held data at the cut; 32..47 were holes and cost nothing",
      );
      assert.ok((await Deno.stat(r.image)).blocks! * 512 <= 64 * 1024, "the image is all hole");
      const map = await runTool("nbdinfo", ["--map", r.uri]);
      assert.match(map.stdout.trim(), new RegExp(`^0\\s+${SIZE}\\s+3\\s+hole,zero$`));
      await r.state.recordCut(cut.dirty, Date.now());
      const report = await sendGeneration(r.state, cut, r.replica);
      assert.deepEqual([...report.sent.extents()], [[0, 16], [32, 16]]);
      report.sent.free();
      assert.equal(report.zeroBlocks, 16);
      assert.equal(report.bytesSent, 16 * BLOCK);
    } finally {
      await cut.release();
    }
    await assertSameImage(`${r.dir}/at-cut.img`, `${r.dir}/store/vm1/image`);
    // The zeroing is the next generation: every block, all sent as zero blocks.
    const next = await syncOnce(r);
    assert.deepEqual(next.sent, [[0, SIZE / BLOCK]]);
    assert.equal(next.report.zeroBlocks, SIZE / BLOCK);
    assert.equal(next.report.bytesSent, 0);
    await assertSameImage(r.image, `${r.dir}/store/vm1/image`);
    const qmap = JSON.parse(
      (await runTool("qemu-img", ["map", "-f", "raw", "--output=json", r.uri])).stdout,
    );
    assert.deepEqual(
      qmap.map((e: { data: boolean; zero: boolean; length: number }) => [e.length, e.data, e.zero]),
      [[SIZE, false, true]],
    );
  },
});

Deno.test({
  name: "TRIM during an open cut punches the hole; the cut still reads the blocks as they were",
  ...tools,
  async fn() {
    await using r = await rig();
    await qemuIo(r.uri, `write -P 0x44 0 ${4 * BLOCK}`, "flush");
    const cut = await r.tracker.cut();
    try {
      await qemuIo(r.uri, `discard 0 ${4 * BLOCK}`, "flush");
      assert.deepEqual(r.tracker.preservedBytes(), { memory: 4 * BLOCK, spilled: 0 });
      const map = await runTool("nbdinfo", ["--map", r.uri]);
      assert.match(map.stdout.trim(), new RegExp(`^0\\s+${SIZE}\\s+3\\s+hole,zero$`));
      assertBytesEqual(await cut.read(0, 4), new Uint8Array(4 * BLOCK).fill(0x44), "blocks 0..3");
    } finally {
      await cut.release();
    }
    assert.equal(r.tracker.dirtyCount(), 4);
  },
});
