import type { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { mkdirDurable } from "../../agent/fs/atomic_write.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";

/** First bytes of an undo log (docs/STORE.md, "Kept generations of a directory store"). */
const MAGIC = new TextEncoder().encode("PSUNDO01");
/** Last bytes: the log is whole (it is also only renamed into place once synced). */
const TRAILER_MAGIC = new TextEncoder().encode("PSUNDOOK");
const FIXED_BYTES = 24;
const TRAILER_BYTES = 32 + 8;
/** Longest metadata record an undo log may hold (meta.json is a few hundred bytes). */
const MAX_META_BYTES = 64 << 10;
/** Bytes of old blocks read from the image per piece while a log is written. */
const PIECE_BYTES = 8 << 20;

/** `g<N>`: the undo log that turns generation N+1's image back into generation N's. */
export const UNDO_NAME = /^g([1-9][0-9]{0,9})$/;

/** What an undo log holds, without its block data (read on demand). */
export interface UndoLog {
  /** The generation the log restores. */
  generation: number;
  /** The metadata record of that generation (meta.json's bytes). */
  meta: Uint8Array;
  /** Blocks the next commit overwrote, ascending. */
  blocks: Uint32Array;
  /** Their manifest entries in `generation`, 32 bytes each. */
  entries: Uint8Array;
  /** Where block `blocks[i]`'s old bytes start in the file. */
  dataOffset: number;
  blockSize: number;
}

/**
 * Writes undo log `path` for `generation` (whose metadata record is `meta`): the current
 * bytes and manifest entries of `blocks` of `image`, to `path.part`, synced, then renamed
 * into place and the directory synced. A log that exists is whole and is never rewritten.
 */
export async function writeUndoLog(
  fs: FileSystem,
  dir: string,
  generation: number,
  meta: Uint8Array,
  identity: VolumeIdentity,
  blocks: Bitmap,
  image: FileHandle,
  manifest: FileHandle,
): Promise<void> {
  const path = `${dir}/g${generation}`;
  if (await fs.exists(path)) return;
  await io(`create ${dir}`, () => mkdirDurable(fs, dir));
  const count = blocks.popcount();
  const indices = new Uint32Array(count);
  let n = 0;
  for (const [start, length] of blocks.extents()) {
    for (let b = start; b < start + length; b++) indices[n++] = b;
  }
  const entries = new Uint8Array(count * ENTRY_BYTES);
  const one = new Uint8Array(ENTRY_BYTES);
  for (let i = 0; i < count; i++) {
    await readFull(manifest, indices[i] * ENTRY_BYTES, one, `${dir} manifest`);
    entries.set(one, i * ENTRY_BYTES);
  }
  const header = new Uint8Array(FIXED_BYTES + meta.length + count * 4 + entries.length);
  header.set(MAGIC);
  const view = new DataView(header.buffer);
  view.setUint32(8, generation, true);
  view.setUint32(12, identity.blockSize, true);
  view.setUint32(16, count, true);
  view.setUint32(20, meta.length, true);
  header.set(meta, FIXED_BYTES);
  new Uint8Array(header.buffer, FIXED_BYTES + meta.length, count * 4).set(
    new Uint8Array(indices.buffer),
  );
  header.set(entries, FIXED_BYTES + meta.length + count * 4);
  const part = `${path}.part`;
  const file = await io(`open ${part}`, () => fs.open(part, { create: true, write: true }));
  try {
    await io(`write ${part}`, async () => {
      await file.truncate(0);
      await file.write(0, header);
      let at = header.length;
      const { blockSize, sizeBytes } = identity;
      const perPiece = Math.max(1, Math.floor(PIECE_BYTES / blockSize));
      for (const [start, length] of blocks.extents()) {
        for (let b = start; b < start + length; b += perPiece) {
          const end = Math.min((Math.min(b + perPiece, start + length)) * blockSize, sizeBytes);
          const bytes = new Uint8Array(end - b * blockSize);
          const got = await image.read(b * blockSize, bytes);
          bytes.fill(0, got);
          await file.write(at, bytes);
          at += bytes.length;
        }
      }
      const trailer = new Uint8Array(TRAILER_BYTES);
      trailer.set(new Uint8Array(await crypto.subtle.digest("SHA-256", header)));
      trailer.set(TRAILER_MAGIC, 32);
      await file.write(at, trailer);
      await file.sync();
    });
  } finally {
    file.close();
  }
  await io(`rename ${part}`, async () => {
    await fs.rename(part, path);
    await fs.syncDir(dir);
  });
}

/** Reads and checks the index of undo log `path` of a volume of `identity`. */
export async function readUndoLog(
  fs: FileSystem,
  path: string,
  identity: VolumeIdentity,
): Promise<{ log: UndoLog; file: FileHandle }> {
  const file = await io(`open ${path}`, () => fs.open(path, { write: false }));
  try {
    const corrupt = (why: string) =>
      new PresyncError(
        ErrorCode.STORE_CORRUPT,
        `undo log ${path} is damaged (${why}); the generation it keeps cannot be served or ` +
          `rolled back to (remove the file to drop that generation)`,
      );
    const size = await io(`size ${path}`, () => file.size());
    if (size < FIXED_BYTES + TRAILER_BYTES) throw corrupt(`${size} bytes`);
    const fixed = new Uint8Array(FIXED_BYTES);
    await readFull(file, 0, fixed, path);
    if (!MAGIC.every((byte, i) => fixed[i] === byte)) throw corrupt("not an undo log");
    const view = new DataView(fixed.buffer);
    const generation = view.getUint32(8, true);
    const blockSize = view.getUint32(12, true);
    const count = view.getUint32(16, true);
    const metaBytes = view.getUint32(20, true);
    const blocksOfVolume = blockCount(identity);
    if (blockSize !== identity.blockSize) throw corrupt(`block size ${blockSize}`);
    if (count > blocksOfVolume) throw corrupt(`${count} blocks`);
    if (metaBytes > MAX_META_BYTES) throw corrupt(`metadata of ${metaBytes} bytes`);
    const headerBytes = FIXED_BYTES + metaBytes + count * (4 + ENTRY_BYTES);
    if (headerBytes + TRAILER_BYTES > size) throw corrupt(`truncated at ${size} bytes`);
    const header = new Uint8Array(headerBytes);
    await readFull(file, 0, header, path);
    const trailer = new Uint8Array(TRAILER_BYTES);
    await readFull(file, size - TRAILER_BYTES, trailer, path);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", header));
    if (!digest.every((byte, i) => trailer[i] === byte)) throw corrupt("checksum mismatch");
    if (!TRAILER_MAGIC.every((byte, i) => trailer[32 + i] === byte)) throw corrupt("no trailer");
    const blocks = new Uint32Array(count);
    new Uint8Array(blocks.buffer).set(
      header.subarray(FIXED_BYTES + metaBytes).subarray(0, count * 4),
    );
    let dataBytes = 0;
    for (let i = 0; i < count; i++) {
      if (blocks[i] >= blocksOfVolume || (i > 0 && blocks[i] <= blocks[i - 1])) {
        throw corrupt(`block ${blocks[i]} out of order or outside the volume`);
      }
      dataBytes += Math.min(blockSize, identity.sizeBytes - blocks[i] * blockSize);
    }
    if (headerBytes + dataBytes + TRAILER_BYTES !== size) throw corrupt(`${size} bytes`);
    const log: UndoLog = {
      generation,
      meta: header.slice(FIXED_BYTES, FIXED_BYTES + metaBytes),
      blocks,
      entries: header.slice(FIXED_BYTES + metaBytes + count * 4),
      dataOffset: headerBytes,
      blockSize,
    };
    return { log, file };
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Index of `block` in `log`, or -1. */
export function findBlock(log: UndoLog, block: number): number {
  let lo = 0;
  let hi = log.blocks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const at = log.blocks[mid];
    if (at === block) return mid;
    if (at < block) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

async function readFull(file: FileHandle, offset: number, into: Uint8Array, what: string) {
  const n = await io(`read ${what}`, () => file.read(offset, into));
  if (n !== into.length) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `${what}: ${into.length} bytes expected at offset ${offset}, ${n} there`,
    );
  }
}
