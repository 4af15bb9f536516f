// The progress of a cut's scan, saved so that a killed scan resumes where it stopped:
// `scan.checkpoint` (docs/STORE.md, "Source state").

import { Bitmap } from "../../agent/core/mod.ts";
import { atomicWrite, readWhole } from "../../agent/fs/atomic_write.ts";
import type { FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";

/** Which scan a checkpoint belongs to: a volume and the baseline it compares with. */
export interface CheckpointOwner {
  uuid: string;
  /** The committed generation the baseline manifest reflects. */
  baseline: number;
}

/** Blocks before `nextBlock` are compared; `dirty` holds those that differ. */
export interface ScanProgress {
  dirty: Bitmap;
  nextBlock: number;
}

/** Saves progress atomically: u32 header length, header JSON, serialized dirty set. */
export async function saveCheckpoint(
  fs: FileSystem,
  path: string,
  owner: CheckpointOwner,
  progress: ScanProgress,
): Promise<void> {
  const header = new TextEncoder().encode(
    JSON.stringify({ uuid: owner.uuid, baseline: owner.baseline, nextBlock: progress.nextBlock }),
  );
  const bits = progress.dirty.serialize();
  const bytes = new Uint8Array(4 + header.length + bits.length);
  new DataView(bytes.buffer).setUint32(0, header.length, true);
  bytes.set(header, 4);
  bytes.set(bits, 4 + header.length);
  await io("save scan checkpoint", () => atomicWrite(fs, path, bytes));
}

/** The saved progress of an interrupted scan of the same owner, or null. */
export async function loadCheckpoint(
  fs: FileSystem,
  path: string,
  owner: CheckpointOwner,
  blocks: number,
): Promise<ScanProgress | null> {
  const bytes = await io("read scan checkpoint", () => readWhole(fs, path));
  if (!bytes || bytes.length < 4) return null;
  try {
    const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headerLength)));
    if (
      header.uuid !== owner.uuid || header.baseline !== owner.baseline ||
      !Number.isSafeInteger(header.nextBlock) || header.nextBlock < 0 || header.nextBlock > blocks
    ) {
      return null;
    }
    const dirty = Bitmap.deserialize(bytes.subarray(4 + headerLength), blocks);
    if (dirty.size !== blocks) {
      dirty.free();
      return null;
    }
    return { dirty, nextBlock: header.nextBlock };
  } catch {
    // A damaged checkpoint only costs a full scan.
    return null;
  }
}
