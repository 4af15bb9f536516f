/**
 * One side of `scripts/bench_rbd_commit.ts`, in a process of its own so that its peak RSS is
 * the destination's alone: seeds a replica from SOURCE1 (every block), then stages and
 * commits the incremental generation SOURCE2 (the blocks listed in BLOCKS), into an RBD
 * store or a directory store. Prints one JSON line of timings and VmHWM.
 *
 *     deno run -A scripts/_bench_commit_child.ts rbd CONF POOL STATE_DIR SOURCE1 SOURCE2 BLOCKS BLOCK_SIZE
 *     deno run -A scripts/_bench_commit_child.ts dir - - STORE_DIR SOURCE1 SOURCE2 BLOCKS BLOCK_SIZE
 *
 * @module
 */

import { Bitmap, blake3, blockEntries } from "../agent/core/mod.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { toHex } from "../agent/hex.ts";
import type { ReplicaBackend } from "../agent/store/replica_backend.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import type { ReplicaVolume } from "../agent/store/replica_volume.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";
import { RbdBackend } from "../plugins/store-rbd/mod.ts";

const [kind, confPath, pool, dir, source1, source2, blocksPath, blockSizeText] = Deno.args;
const blockSize = Number(blockSizeText);
const fs = new DenoFileSystem();
const backend: ReplicaBackend = kind === "rbd"
  ? new RbdBackend({ spec: { pool, confPath }, stateDir: dir, fs, keep: 2 })
  : new DirectoryBackend(fs, dir);
const sizeBytes = (await Deno.stat(source1)).size;
const blocks = Math.ceil(sizeBytes / blockSize);
const store = new ReplicaStore(backend);
const replica = await store.init(newVolumeIdentity("bench", sizeBytes, blockSize));

/** Root of a source file (its manifest hashed), read in 8 MiB pieces. */
async function rootOf(path: string): Promise<string> {
  const file = await Deno.open(path);
  const entries: Uint8Array[] = [];
  const piece = new Uint8Array(8 << 20);
  for (let offset = 0; offset < sizeBytes; offset += piece.length) {
    const bytes = piece.subarray(0, Math.min(piece.length, sizeBytes - offset));
    let got = 0;
    while (got < bytes.length) got += (await file.read(bytes.subarray(got)))!;
    entries.push(blockEntries(bytes, blockSize));
  }
  file.close();
  const all = new Uint8Array(entries.reduce((n, e) => n + e.length, 0));
  let at = 0;
  for (const e of entries) all.set(e, at), at += e.length;
  return toHex(blake3(all));
}

/** Stages `list` of `path` in batches of 64 blocks (a flush each), as a session would. */
async function stage(volume: ReplicaVolume, path: string, list: number[]): Promise<void> {
  const file = await Deno.open(path);
  try {
    for (let at = 0; at < list.length; at += 64) {
      const batch = [];
      for (const block of list.slice(at, at + 64)) {
        const data = new Uint8Array(Math.min(blockSize, sizeBytes - block * blockSize));
        await file.seek(block * blockSize, Deno.SeekMode.Start);
        let got = 0;
        while (got < data.length) got += (await file.read(data.subarray(got)))!;
        batch.push({ block, data, hash: blake3(data) });
      }
      await volume.stage(batch);
      await volume.flush();
    }
  } finally {
    file.close();
  }
}

const all = Array.from({ length: blocks }, (_, b) => b);
const changed: number[] = JSON.parse(await Deno.readTextFile(blocksPath));
const [root1, root2] = [await rootOf(source1), await rootOf(source2)];

let start = performance.now();
using dirty1 = new Bitmap(blocks).setRange(0, blocks);
await replica.beginGeneration(1, dirty1, 1);
await stage(replica, source1, all);
await replica.commit(1, root1);
const seedMs = performance.now() - start;

start = performance.now();
using dirty2 = new Bitmap(blocks);
for (const b of changed) dirty2.set(b);
await replica.beginGeneration(2, dirty2, 2);
await stage(replica, source2, changed);
const stageMs = performance.now() - start;
start = performance.now();
await replica.commit(2, root2);
const commitMs = performance.now() - start;
replica.close();

const status = await Deno.readTextFile("/proc/self/status");
const hwmKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
console.log(JSON.stringify({ seedMs, stageMs, commitMs, hwmKiB }));
if (backend instanceof RbdBackend) await backend.close();
