/**
 * One side of one round of `scripts/bench_rbd_commit.ts`, in a process of its own so that its
 * peak RSS is the destination's alone: generation 1 creates the replica and seeds it from
 * SOURCE (every block); a later generation opens it, stages the blocks listed in BLOCKS (a
 * JSON array) from SOURCE and commits. Prints one JSON line: staging and commit times, the
 * commit's phases (below) and VmHWM.
 *
 *     deno run -A scripts/_bench_commit_child.ts rbd CONF POOL STATE_DIR SOURCE BLOCKS BLOCK_SIZE GENERATION VOLUME WINDOW
 *     deno run -A scripts/_bench_commit_child.ts dir - - STORE_DIR SOURCE BLOCKS BLOCK_SIZE GENERATION VOLUME -
 *
 * WINDOW: the RBD back end's write window, `-` for its default.
 *
 * The phases come from the back end's calls as the commit makes them (every object the
 * protocol gets from the back end is wrapped in a proxy that notes when each call started and
 * settled), so the commit runs the tree's code unchanged.
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

const [
  kind,
  confPath,
  pool,
  dir,
  source,
  blocksPath,
  blockSizeText,
  generationText,
  volume,
  window,
] = Deno.args;
const blockSize = Number(blockSizeText);
const generation = Number(generationText);
const fs = new DenoFileSystem();
const rbd = kind === "rbd"
  ? new RbdBackend({
    spec: { pool, confPath },
    stateDir: dir,
    fs,
    keep: 2,
    ...(window === "-" ? {} : { writeWindow: Number(window) }),
  })
  : null;
const sizeBytes = (await Deno.stat(source)).size;
const blocks = Math.ceil(sizeBytes / blockSize);

/** A back-end call: what (`image.write`, `staging.write:commit`…), when it started and settled. */
interface Span {
  what: string;
  start: number;
  end: number;
}
const spans: Span[] = [];

/**
 * `target` with every method call noted in `spans` as `label.method` (a `write` of a staging
 * record as `label.write:NAME`); `wrap` wraps what a method returns (or a property holds).
 */
function traced<T extends object>(
  target: T,
  label: string,
  wrap: Record<string, (value: never) => unknown> = {},
): T {
  return new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property, object);
      const name = String(property);
      const after = wrap[name] as ((value: unknown) => unknown) | undefined;
      if (typeof value !== "function") return after ? after(value) : value;
      return (...args: unknown[]) => {
        const what = label === "staging" && name === "write"
          ? `${label}.${name}:${args[0]}`
          : `${label}.${name}`;
        const start = performance.now();
        const result = value.apply(object, args);
        const settle = (settled: unknown) => {
          spans.push({ what, start, end: performance.now() });
          return after ? after(settled) : settled;
        };
        return result instanceof Promise ? result.then(settle) : settle(result);
      };
    },
  });
}

const backend: ReplicaBackend = traced(rbd ?? new DirectoryBackend(fs, dir), "backend", {
  volume: (volume: object) =>
    traced(volume, "volume", {
      openImage: (image: object) => traced(image, "image"),
      openManifest: (file: object) => traced(file, "manifest"),
      staging: (staging: object) =>
        traced(staging, "staging", { openLog: (file: object) => traced(file, "log") }),
    }),
});
const store = new ReplicaStore(backend);

/** Root of the source file (its manifest hashed), read in 8 MiB pieces. */
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

/**
 * The commit's phases (ms) from the spans between `start` and `end`: prepare's log check
 * (staging flush, reading and checking every record, the manifest's current entries), its
 * image flush and manifest sync (with the root), the commit record, the apply's writes (with
 * its read of the log), the flush, then the snapshot beside the manifest's new entries (the
 * wall time of both, and the snapshot's own), then the metadata record beside the pruning of
 * old snapshots (wall time, and each one's own; a tree whose snapshot call prunes shows it in
 * the snapshot) and the staging area's removal; and the time spent in reads of the log, by
 * pass (beside other work: not on the critical path).
 */
function phases(start: number, end: number): Record<string, number> {
  const inCommit = spans.filter((s) => s.start >= start && s.end <= end);
  const first = (what: string) => inCommit.find((s) => s.what === what);
  const length = (span: Span | undefined) => span ? span.end - span.start : 0;
  const flushes = inCommit.filter((s) => s.what === "image.flush");
  const record = first("staging.write:commit");
  const snapshot = first("image.snapshotGeneration");
  const prune = first("image.pruneGenerations");
  const meta = first("volume.writeMeta");
  const discard = first("staging.discard");
  if (!record || !meta || !discard || flushes.length === 0) throw new Error("commit spans missing");
  const applyFlush = flushes[flushes.length - 1];
  const prepareFlush = flushes.length > 1 ? flushes[0] : null;
  const logReads = (from: number, to: number) =>
    inCommit.filter((s) => s.what === "log.read" && s.start >= from && s.end <= to)
      .reduce((ms, s) => ms + s.end - s.start, 0);
  const prepareEnd = prepareFlush?.start ?? record.start;
  const metaStart = Math.min(meta.start, prune?.start ?? Infinity);
  return {
    prepareCheck: prepareEnd - start,
    prepareSync: record.start - prepareEnd,
    commitRecord: length(record),
    applyWrites: applyFlush.start - record.end,
    flush: length(applyFlush),
    snapshotAndManifest: metaStart - applyFlush.end,
    snapshot: length(snapshot),
    metadataAndPrune: discard.start - metaStart,
    metadata: length(meta),
    prune: length(prune),
    dropStaging: end - discard.start,
    logReadPrepare: logReads(start, record.start),
    logReadApply: logReads(record.end, applyFlush.start),
  };
}

const list: number[] = generation === 1
  ? Array.from({ length: blocks }, (_, b) => b)
  : JSON.parse(await Deno.readTextFile(blocksPath));
const root = await rootOf(source);
const replica = generation === 1
  ? await store.init(newVolumeIdentity(volume, sizeBytes, blockSize))
  : await store.open(volume);
using dirty = new Bitmap(blocks);
for (const b of list) dirty.set(b);
let start = performance.now();
await replica.beginGeneration(generation, dirty, generation);
await stage(replica, source, list);
const stageMs = performance.now() - start;
start = performance.now();
await replica.commit(generation, root);
const end = performance.now();
replica.close();

const status = await Deno.readTextFile("/proc/self/status");
const hwmKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
console.log(JSON.stringify({ stageMs, commitMs: end - start, phases: phases(start, end), hwmKiB }));
await rbd?.close();
