import assert from "node:assert/strict";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { WorkerNbdTracker } from "../../plugins/tracker-nbd/worker_tracker.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { sessionPair } from "../../fixtures/session_pair.ts";
import { hashFile } from "../../fixtures/workload.ts";
import type { Prng } from "../../fixtures/prng.ts";
import type { SessionPair } from "../../fixtures/session_pair.ts";
import { PacedDestination } from "../daemon/paced_destination.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { Logger } from "../log.ts";
import { NbdClient } from "../nbd/mod.ts";
import { openSourceVolume } from "../source/open_source_volume.ts";
import { SourceState } from "../source/source_state.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { sendGeneration, type SendOptions, type SendReport } from "../sync/send_generation.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { Priority } from "../wire/frame.ts";
import { RemoteDestination } from "./remote_destination.ts";
import { SyncServer } from "./sync_server.ts";

const fs = new DenoFileSystem();
const codec = createZstdCodec();
const BLOCK = 64 * 1024;
const agent = { instance: "cccccccccccccccc", host: "db1", pid: 33 };

/**
 * A source image served over NBD by the nbd tracker (in its worker, as the agent runs it),
 * a sync server over a store, and a way to send the next generation over a fresh session.
 */
async function rig(prng: Prng, sizeBytes: number) {
  const root = await Deno.makeTempDir({ prefix: "presync-patch-" });
  const image = `${root}/source.img`;
  await Deno.writeFile(image, prng.fill(new Uint8Array(sizeBytes)));
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  const log: Logger = (_level, event, fields = {}) => void lines.push({ event, fields });
  const server = new SyncServer(
    new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)),
    [codec, createNoneCodec()],
    log,
  );
  const identity = newVolumeIdentity("vm1", sizeBytes, BLOCK);
  const state = await SourceState.init(fs, `${root}/state`, identity);
  const tracker = await WorkerNbdTracker.create({
    imagePath: image,
    identity,
    stateDir: `${root}/state`,
    listen: [{ transport: "unix", path: `${root}/nbd.sock` }],
  });
  const client = await NbdClient.connect(tracker.addresses[0], "vm1");
  return {
    root,
    image,
    replicaImage: `${root}/store/vm1/image`,
    lines,
    client,
    /** Cuts the next generation and sends it over a new session; returns what it did. */
    async send(
      hooks: SendOptions = {},
      during?: (pair: SessionPair) => void,
    ): Promise<{ report: SendReport; wireBytes: number }> {
      const cut = await tracker.cut();
      await state.recordCut(cut.dirty, Date.now());
      try {
        return await this.resend(cut, hooks, during);
      } finally {
        await cut.release();
      }
    },
    /** Sends the pending generation with `cut` over a new session. */
    async resend(
      cut: Awaited<ReturnType<typeof tracker.cut>>,
      hooks: SendOptions = {},
      during?: (pair: SessionPair) => void,
    ): Promise<{ report: SendReport; wireBytes: number }> {
      await using pair = await sessionPair();
      server.serveSession(pair.server);
      const { remote } = await RemoteDestination.open(
        pair.client.openStream(Priority.BULK),
        identity,
        agent,
      );
      during?.(pair);
      const counters = { rawBytes: 0, wireBytes: 0 };
      try {
        const destination = new PacedDestination(remote, {
          codec,
          counters,
          pace: () => Promise.resolve(),
        });
        const report = await sendGeneration(state, cut, destination, hooks);
        report.sent.free();
        return { report, wireBytes: counters.wireBytes };
      } finally {
        await remote.close();
      }
    },
    /** Resumes the pending generation (a reconnect after a failure): pages unknown. */
    async resume(): Promise<SendReport> {
      const cut = await tracker.resume(state.pending!.dirty);
      try {
        return (await this.resend(cut)).report;
      } finally {
        await cut.release();
      }
    },
    async [Symbol.asyncDispose]() {
      await client.close();
      await tracker.close();
      state.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Random writes of 1 byte to 6 KiB through NBD (most sub-block, some across blocks). */
async function subBlockWrites(
  client: NbdClient,
  prng: Prng,
  sizeBytes: number,
  count: number,
): Promise<void> {
  for (let i = 0; i < count; i++) {
    const length = 1 + prng.int(6 * 1024);
    const offset = prng.int(sizeBytes - length);
    await client.write(offset, prng.fill(new Uint8Array(length)));
  }
}

seededTest(
  "patches: seeded sub-block writes on an unaligned image travel as page runs; the replica equals the source",
  async (prng) => {
    const size = 48 * BLOCK + 5000; // the last block is short
    await using r = await rig(prng, size);
    const first = await r.send();
    assert.equal(first.report.generation, 1);
    for (let generation = 2; generation <= 4; generation++) {
      await subBlockWrites(r.client, prng, size, 30);
      // The last block's tail too: its second page is only 904 bytes long.
      await r.client.write(size - 100, prng.fill(new Uint8Array(100)));
      const { report, wireBytes } = await r.send();
      assert.equal(report.generation, generation);
      assert.ok(report.pagedBlocks > 0, `generation ${generation} had patched blocks`);
      assert.equal(report.resentWhole, 0);
      assert.equal(await hashFile(r.replicaImage), await hashFile(r.image));
      // Random data does not compress: the wire carries about the pages, not the blocks.
      assert.ok(
        wireBytes < report.bytesSent / 2,
        `generation ${generation}: ${wireBytes} bytes on the wire for ${report.bytesSent} of blocks`,
      );
    }
  },
);

seededTest(
  "patches: a 4 KiB write costs about 4 KiB on the wire, not the 64 KiB block",
  async (prng) => {
    const size = 16 * BLOCK;
    await using r = await rig(prng, size);
    await r.send();
    const page = prng.int(size / 4096);
    await r.client.write(page * 4096, prng.fill(new Uint8Array(4096)));
    const { report, wireBytes } = await r.send();
    assert.equal(report.pagedBlocks, 1);
    // Message header 5 + block number 4 + hash 32 + frame header 5 + patch header 9 + 4096.
    assert.equal(wireBytes, 5 + 4 + 32 + 5 + 9 + 4096);
    assert.equal(await hashFile(r.replicaImage), await hashFile(r.image));
  },
);

seededTest(
  "patches: a destination copy that differs from what the source patched is never applied; the block is resent whole",
  async (prng) => {
    const size = 32 * BLOCK;
    await using r = await rig(prng, size);
    await r.send();
    // Damage block 5 of the replica in a page the next write does not touch.
    const damaged = 5;
    const file = await Deno.open(r.replicaImage, { write: true });
    await file.seek(damaged * BLOCK + 10 * 4096, Deno.SeekMode.Start);
    await file.write(new Uint8Array([1, 2, 3, 4]));
    file.close();
    await r.client.write(damaged * BLOCK + 4096, prng.fill(new Uint8Array(4096)));
    await r.client.write(20 * BLOCK + 3 * 4096, prng.fill(new Uint8Array(100)));
    const { report, wireBytes } = await r.send();
    assert.equal(report.pagedBlocks, 2);
    assert.equal(report.resentWhole, 1, "block 5 was sent again, whole");
    assert.ok(wireBytes > BLOCK, "the whole block crossed");
    assert.deepEqual(
      r.lines.filter((l) => l.event === "patch_base_differs").map((l) => l.fields.block),
      [damaged],
    );
    // Had the patch been applied, the damage would have stayed: the whole block replaced it.
    assert.equal(await hashFile(r.replicaImage), await hashFile(r.image));
  },
);

seededTest(
  "patches: a link cut in the middle of a patched generation keeps the replica committed; the resume completes it",
  async (prng) => {
    const size = 320 * BLOCK;
    await using r = await rig(prng, size);
    await r.send();
    const committedImage = await hashFile(r.replicaImage);
    // One 4 KiB write per block: 320 patched blocks, 20 MiB of blocks, several flushes.
    for (let block = 0; block < 320; block++) {
      await r.client.write(block * BLOCK + prng.int(16) * 4096, prng.fill(new Uint8Array(4096)));
    }
    let flushes = 0;
    let session: SessionPair | null = null;
    await assert.rejects(
      r.send({
        afterFlush: () => {
          // Cut the link after the first acknowledgement point, patches still in flight.
          if (++flushes === 1) session!.client.abort("link cut");
        },
      }, (pair) => (session = pair)),
    );
    // Nothing is applied before the commit: the replica is still the committed generation.
    assert.equal(await hashFile(r.replicaImage), committedImage);
    const report = await r.resume();
    assert.equal(report.generation, 2);
    assert.ok(report.alreadyStaged > 0, "what the first attempt staged was kept");
    // A resumed cut knows no pages: the destination's page digests find them again.
    assert.ok(report.pagedBlocks > 0, `the rest went as patches: ${JSON.stringify(report)}`);
    assert.equal(report.resentWhole, 0);
    assert.equal(await hashFile(r.replicaImage), await hashFile(r.image));
  },
);

seededTest(
  "patches: with the scan tracker, the destination's page digests find the changed pages (none asked before a commit); a 4 KiB change costs about 4 KiB",
  async (prng) => {
    const root = await Deno.makeTempDir({ prefix: "presync-patch-scan-" });
    const size = 40 * BLOCK + 5000;
    const image = `${root}/source.img`;
    const content = prng.fill(new Uint8Array(size));
    // The first page of every block zero: a patch over the replica's zeros could skip it.
    for (let at = 0; at < size; at += BLOCK) content.fill(0, at, at + 4096);
    await Deno.writeFile(image, content);
    const server = new SyncServer(
      new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)),
      [codec, createNoneCodec()],
      () => {},
    );
    const volume = await openSourceVolume({
      fs,
      name: "vm1",
      imagePath: image,
      stateDir: `${root}/state`,
      blockSize: BLOCK,
    });
    try {
      const send = async () => {
        await using pair = await sessionPair();
        server.serveSession(pair.server);
        const { remote } = await RemoteDestination.open(
          pair.client.openStream(Priority.BULK),
          volume.state.identity,
          agent,
        );
        const counters = { rawBytes: 0, wireBytes: 0 };
        try {
          const cut = await volume.tracker.cut();
          await volume.state.recordCut(cut.dirty, Date.now());
          const report = await sendGeneration(
            volume.state,
            cut,
            new PacedDestination(remote, { codec, counters, pace: () => Promise.resolve() }),
          );
          await cut.release();
          report.sent.free();
          return { report, wireBytes: counters.wireBytes };
        } finally {
          await remote.close();
        }
      };
      // Nothing is committed yet: no digests are asked, every block goes whole.
      const first = await send();
      assert.equal(first.report.pagedBlocks, 0);
      assert.equal(first.report.bytesSent, size);
      // One random 4 KiB page in three blocks, and 10 bytes into the short last block.
      const blocks = [3, 17, 30];
      for (const block of blocks) {
        const at = block * BLOCK + prng.int(16) * 4096;
        content.set(prng.fill(new Uint8Array(4096)), at);
      }
      content.set(prng.fill(new Uint8Array(10)), size - 10);
      await Deno.writeFile(image, content);
      const { report, wireBytes } = await send();
      assert.equal(report.pagedBlocks, 4);
      assert.equal(report.resentWhole, 0);
      // Three 4 KiB pages and the last block's 904-byte second page, each with 55 bytes of
      // headers; random data does not compress.
      assert.equal(wireBytes, 3 * (4096 + 55) + (904 + 55));
      assert.equal(await hashFile(`${root}/store/vm1/image`), await hashFile(image));
    } finally {
      await volume.tracker.close();
      volume.state.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);
