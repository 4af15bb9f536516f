import type { Extent } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { openSourceVolume } from "../source/open_source_volume.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import type { ReplicaVolume } from "../store/replica_volume.ts";
import { DEFAULT_BLOCK_SIZE } from "../volume/volume_identity.ts";
import { sendGeneration, type SendReport } from "./send_generation.ts";

/** Options of {@linkcode syncLocal}. */
export interface LocalSyncOptions {
  /** The source image (a raw disk image file). */
  imagePath: string;
  /** The destination store directory. */
  storeDir: string;
  /** Volume name. */
  volume: string;
  /** The source agent's state directory for this volume. */
  stateDir: string;
  /** Block size for a new volume (default 64 KiB); ignored once the volume exists. */
  blockSize?: number;
  /** Read-rate cap on the source image, bytes per second (0: unlimited). */
  readRateBytesPerSecond?: number;
  fs?: FileSystem;
  /** Called after each durable acknowledgement point (tests use it to kill at known points). */
  afterFlush?: () => void | Promise<void>;
}

/** One generation as reported by {@linkcode syncLocal}. */
export type GenerationReport = Omit<SendReport, "sent"> & {
  /** Blocks sent by this run (zero markers included). */
  blocksSent: number;
  /** The blocks sent by this run, as runs `[start, length]`. */
  sentExtents: Extent[];
  /** True for a generation left pending by an earlier run. */
  resumed: boolean;
};

/**
 * The whole pipeline in one process, without a network: finishes a generation left pending
 * by an earlier run (sending only what the replica has not durably staged), then cuts a
 * new generation with the scan tracker, sends it and commits it. The network path must
 * move exactly the same blocks.
 */
export async function syncLocal(options: LocalSyncOptions): Promise<GenerationReport[]> {
  const fs = options.fs ?? new DenoFileSystem();
  const { state, tracker } = await openSourceVolume({
    fs,
    name: options.volume,
    imagePath: options.imagePath,
    stateDir: options.stateDir,
    blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE,
    readRateBytesPerSecond: options.readRateBytesPerSecond,
  });
  let replica: ReplicaVolume | null = null;
  try {
    const store = new ReplicaStore(new DirectoryBackend(fs, options.storeDir));
    const name = state.identity.name;
    replica = await store.has(name) ? await store.open(name) : await store.init(state.identity);
    const reports: GenerationReport[] = [];
    if (state.pending) {
      const cut = await tracker.resume(state.pending.dirty);
      try {
        reports.push(summarize(await sendGeneration(state, cut, replica, options), true));
      } finally {
        await cut.release();
      }
    }
    const cutTimeMs = Date.now();
    const cut = await tracker.cut();
    try {
      await state.recordCut(cut.dirty, cutTimeMs);
      reports.push(summarize(await sendGeneration(state, cut, replica, options), false));
    } finally {
      await cut.release();
    }
    return reports;
  } finally {
    await tracker.close();
    replica?.close();
    state.close();
  }
}

function summarize(report: SendReport, resumed: boolean): GenerationReport {
  const { sent, ...rest } = report;
  const blocksSent = sent.popcount();
  const sentExtents = [...sent.extents()];
  sent.free();
  return { ...rest, blocksSent, sentExtents, resumed };
}
