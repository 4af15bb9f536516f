import { Bitmap } from "../../agent/core/mod.ts";
import { atomicWrite, readWhole } from "../../agent/fs/atomic_write.ts";
import type { FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";

/** File in the tracker's state directory: the scan that stands in for a lost bitmap. */
export const SCAN_STATE_FILE = "qemu-scan.state";

/**
 * A scan of the disk against the manifest, done because no bitmap knew the writes: blocks
 * found changed go with generation `generation` (the next cut), together with what the
 * new bitmap records. Written `complete: false` *before* that bitmap is created, so an agent
 * that dies mid-scan scans again instead of trusting a bitmap that missed the earlier writes.
 */
export interface ScanState {
  generation: number;
  complete: boolean;
  /** The changed blocks (complete scans only). */
  dirty: Bitmap | null;
}

/** Layout: u32 LE header length, JSON header {version, generation, complete}, bitmap. */
export async function saveScanState(fs: FileSystem, path: string, state: ScanState): Promise<void> {
  const header = new TextEncoder().encode(
    JSON.stringify({ version: 1, generation: state.generation, complete: state.complete }),
  );
  const bits = state.dirty?.serialize() ?? new Uint8Array(0);
  const bytes = new Uint8Array(4 + header.length + bits.length);
  new DataView(bytes.buffer).setUint32(0, header.length, true);
  bytes.set(header, 4);
  bytes.set(bits, 4 + header.length);
  await io(`save scan state ${path}`, () => atomicWrite(fs, path, bytes));
}

/**
 * The saved state, or null when there is none. A damaged file reads as an interrupted scan
 * of `fallbackGeneration`, so it costs a scan, never a missed write.
 */
export async function loadScanState(
  fs: FileSystem,
  path: string,
  blocks: number,
  fallbackGeneration: number,
): Promise<ScanState | null> {
  const bytes = await io(`read scan state ${path}`, () => readWhole(fs, path));
  if (!bytes) return null;
  try {
    const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headerLength)));
    if (header.version !== 1 || !Number.isSafeInteger(header.generation)) throw new Error("header");
    return {
      generation: header.generation,
      complete: header.complete === true,
      dirty: header.complete === true
        ? Bitmap.deserialize(bytes.subarray(4 + headerLength), blocks)
        : null,
    };
  } catch {
    return { generation: fallbackGeneration, complete: false, dirty: null };
  }
}

/** Removes the saved state. Idempotent. */
export async function removeScanState(fs: FileSystem, path: string): Promise<void> {
  if (await fs.exists(path)) await io(`remove scan state ${path}`, () => fs.remove(path));
}
