// Test helpers of the scan tracker: a volume in a simulated file system whose manifest is in
// sync with its image, and the ground truth of what a scan must find.

import { blockEntries } from "../../agent/core/mod.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { newVolumeIdentity, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { ScanTracker, type ScanTrackerOptions } from "./scan_tracker.ts";

export const BLOCK = 4096;
export const IMAGE = "/s/image";
export const TABLE = "/s/scan.prefilter";

/** A volume whose manifest describes its image, as after a completed sync. */
export interface TestVolume {
  fs: PowerCutFileSystem;
  identity: VolumeIdentity;
  manifest: ManifestFile;
  secret: Uint8Array;
}

/**
 * `blocks` blocks of random data (about a fifth all zero, the last one short by `shortBy`
 * bytes) and a manifest made from them.
 */
export async function syncedVolume(prng: Prng, blocks: number, shortBy = 0): Promise<TestVolume> {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/s");
  await fs.syncDir("/");
  const sizeBytes = blocks * BLOCK - shortBy;
  const data = prng.fill(new Uint8Array(sizeBytes));
  for (let i = 0; i < blocks; i++) if (prng.int(5) === 0) data.fill(0, i * BLOCK, (i + 1) * BLOCK);
  const image = await fs.open(IMAGE, { create: true });
  await image.write(0, data);
  await image.sync();
  image.close();
  const identity = newVolumeIdentity("scan", sizeBytes, BLOCK);
  const manifest = await ManifestFile.open(fs, "/s/manifest", blocks, { create: true });
  await manifest.write(0, blockEntries(data, BLOCK));
  await manifest.sync();
  await fs.syncDir("/s");
  return { fs, identity, manifest, secret: prng.fill(new Uint8Array(32)) };
}

/** A tracker of `volume` with the pre-filter (unless `prefilter: undefined` is passed). */
export function trackerOf(volume: TestVolume, extra: Partial<ScanTrackerOptions> = {}) {
  return new ScanTracker({
    imagePath: IMAGE,
    identity: volume.identity,
    manifest: volume.manifest,
    baselineGeneration: 0,
    fs: volume.fs,
    workers: 1,
    prefilter: { tablePath: TABLE, secret: volume.secret },
    ...extra,
  });
}

/** The dirty runs of one cut. */
export async function cutRuns(tracker: ScanTracker): Promise<[number, number][]> {
  const cut = await tracker.cut();
  try {
    return [...cut.dirty.extents()];
  } finally {
    await cut.release();
  }
}

/** What a scan must find: the runs of blocks whose entry differs from the manifest. */
export async function truth(volume: TestVolume, fs: FileSystem = volume.fs) {
  const image = await fs.open(IMAGE);
  const data = new Uint8Array(volume.identity.sizeBytes);
  await image.read(0, data);
  image.close();
  const entries = blockEntries(data, BLOCK);
  const manifest = await volume.manifest.read(0, volume.manifest.blocks);
  const runs: [number, number][] = [];
  for (let i = 0; i < volume.manifest.blocks; i++) {
    const a = entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
    const b = manifest.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
    if (a.every((byte, k) => byte === b[k])) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** Writes `bytes` at `offset` of the image (and syncs it with `sync`). */
export async function writeImage(
  fs: FileSystem,
  offset: number,
  bytes: Uint8Array,
  sync = false,
) {
  const image = await fs.open(IMAGE, { write: true });
  await image.write(offset, bytes);
  if (sync) await image.sync();
  image.close();
}

/** The bytes of block `block`. */
export async function readBlock(fs: FileSystem, block: number): Promise<Uint8Array> {
  const image = await fs.open(IMAGE);
  const data = new Uint8Array(BLOCK);
  const n = await image.read(block * BLOCK, data);
  image.close();
  return data.subarray(0, n);
}

/** `fs` with every file it opens passed through `change` (which may replace its methods). */
export function withOpened(
  fs: FileSystem,
  change: (path: string, file: FileHandle) => FileHandle,
): FileSystem {
  return {
    open: async (path, options) => change(path, await fs.open(path, options)),
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

/** `fs`, with `onImageRead` called (and awaited) after every read of the image. */
export function watched(
  fs: FileSystem,
  onImageRead: (offset: number, bytes: number) => void | Promise<void>,
): FileSystem {
  return withOpened(fs, (path, file) => {
    if (path !== IMAGE) return file;
    const read = file.read.bind(file);
    file.read = async (offset, into) => {
      const n = await read(offset, into);
      await onImageRead(offset, into.length);
      return n;
    };
    return file;
  });
}

/** Random writes a guest might do: sub-block writes, whole blocks zeroed, one reverted block. */
export async function scribble(
  prng: Prng,
  volume: TestVolume,
  blocks: number,
): Promise<Set<number>> {
  const changed = new Set<number>();
  for (let w = 0; w < 40; w++) {
    const block = prng.int(blocks);
    const offset = Math.min(block * BLOCK + prng.int(BLOCK), volume.identity.sizeBytes - 1);
    const length = Math.min(1 + prng.int(BLOCK), volume.identity.sizeBytes - offset);
    const bytes = prng.fill(new Uint8Array(length));
    if (prng.int(4) === 0) bytes.fill(0);
    // A write may run into the next block.
    const touched = [block, block + 1].filter((b) => b < blocks);
    const before = await Promise.all(touched.map((b) => readBlock(volume.fs, b)));
    await writeImage(volume.fs, offset, bytes);
    for (const [k, b] of touched.entries()) {
      const after = await readBlock(volume.fs, b);
      if (!before[k].every((byte, i) => byte === after[i])) changed.add(b);
    }
  }
  // Written and written back: the same bytes as at the last scan.
  const reverted = prng.int(blocks);
  const original = await readBlock(volume.fs, reverted);
  await writeImage(volume.fs, reverted * BLOCK, new Uint8Array(original.length).fill(0x5a));
  await writeImage(volume.fs, reverted * BLOCK, original);
  return changed;
}

/** Blocks of `blocks` that are not all zero now. */
export async function nonZero(volume: TestVolume, blocks: Iterable<number>): Promise<number> {
  let n = 0;
  for (const block of blocks) if ((await readBlock(volume.fs, block)).some((b) => b !== 0)) n++;
  return n;
}

/** Makes the image's writes durable (they survive a simulated power cut). */
export async function syncImage(fs: FileSystem): Promise<void> {
  const image = await fs.open(IMAGE, { write: true });
  await image.sync();
  image.close();
}
