/**
 * The evacuation benchmark's disk side: a realistic source image, the "VM" writing to it (a
 * hot set and a cold tail, through the file or presync's NBD server), and the remaining
 * compressed difference between two images (the physical limit's numerator).
 *
 * @module
 */

import { fillText } from "../fixtures/data.ts";
import type { Prng } from "../fixtures/prng.ts";
import { NbdClient, parseNbdAddress } from "../agent/nbd/mod.ts";

const MiB = 1024 * 1024;
/** Granularity of content kinds in the image and of the block diff. */
export const REGION_BYTES = 64 * 1024;
/** Size of one write of the workload: a 4 KiB page, as a guest's page cache writes back. */
export const WRITE_BYTES = 4 * 1024;

/** Shares of content kinds in a fresh image; the rest of each region is zeros. */
export interface ImageMix {
  /** Share of 64 KiB regions left all zero (unused or trimmed space), 0 to 1. */
  zeroShare: number;
  /** Share of the non-zero regions that are text-like (the rest is incompressible). */
  textShare: number;
}

/**
 * Writes a sparse image of `sizeBytes`: each 64 KiB region is zeros (left as a hole), text or
 * random bytes, drawn from `prng`.
 */
export async function writeImage(
  path: string,
  prng: Prng,
  sizeBytes: number,
  mix: ImageMix,
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.truncate(sizeBytes);
    const chunk = new Uint8Array(16 * MiB);
    for (let at = 0; at < sizeBytes; at += chunk.length) {
      const piece = chunk.subarray(0, Math.min(chunk.length, sizeBytes - at));
      // Runs of data regions [from, to) of the piece: only those are written, zeros stay holes.
      const runs: [number, number][] = [];
      for (let r = 0; r < piece.length; r += REGION_BYTES) {
        const end = Math.min(piece.length, r + REGION_BYTES);
        if (prng.int(1_000_000) < mix.zeroShare * 1_000_000) continue;
        const region = piece.subarray(r, end);
        if (prng.int(1_000_000) < mix.textShare * 1_000_000) fillText(prng, region);
        else prng.fill(region);
        const last = runs.at(-1);
        if (last && last[1] === r) last[1] = end;
        else runs.push([r, end]);
      }
      for (const [from, to] of runs) {
        await file.seek(at + from, Deno.SeekMode.Start);
        const run = piece.subarray(from, to);
        for (let done = 0; done < run.length;) done += await file.write(run.subarray(done));
      }
    }
  } finally {
    file.close();
  }
}

/** Where the "VM" writes: the image file itself, or presync's NBD server in front of it. */
export interface DiskWriter {
  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Flushes and closes. Idempotent. */
  close(): Promise<void>;
}

/** Writes straight into the image file (the scan tracker finds the changes). */
export async function fileWriter(path: string): Promise<DiskWriter> {
  const file = await Deno.open(path, { write: true });
  let open = true;
  return {
    async write(offset, data) {
      await file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < data.length;) done += await file.write(data.subarray(done));
    },
    close() {
      if (open) file.close();
      open = false;
      return Promise.resolve();
    },
  };
}

/** Writes through presync's NBD server (the nbd tracker marks every write). */
export async function nbdWriter(socketPath: string, exportName: string): Promise<DiskWriter> {
  const client = await NbdClient.connect(parseNbdAddress(`unix:${socketPath}`), exportName);
  let open = true;
  return {
    write: (offset, data) => client.write(offset, data),
    async close() {
      if (!open) return;
      open = false;
      await client.flush();
      await client.close();
    },
  };
}

/** Write rates of the workload. */
export interface WorkloadRates {
  /** Bytes per second written into the hot set. */
  hotBytesPerSecond: number;
  /** Size of the hot set (one contiguous range), bytes. */
  hotSetBytes: number;
  /** Bytes per second written anywhere in the image (the cold tail). */
  coldBytesPerSecond: number;
}

/** A running workload; {@linkcode Workload.stop} pauses the "VM". */
export interface Workload {
  /** Stops writing, flushes, and returns the bytes written. Idempotent. */
  stop(): Promise<number>;
  /** Bytes written so far. */
  readonly bytesWritten: number;
}

/**
 * Starts writing 4 KiB pages (text or random, half each) in ticks of 100 ms: the hot set
 * at `hotBytesPerSecond`, uniformly over the image at `coldBytesPerSecond`.
 */
export function startWorkload(
  writer: DiskWriter,
  prng: Prng,
  sizeBytes: number,
  rates: WorkloadRates,
): Workload {
  const tickMs = 100;
  const hotSet = Math.min(rates.hotSetBytes, sizeBytes);
  const hotStart = Math.floor(prng.int(Math.max(1, (sizeBytes - hotSet) / REGION_BYTES))) *
    REGION_BYTES;
  let stopping = false;
  let written = 0;
  const debt = { hot: 0, cold: 0 };
  const piece = new Uint8Array(WRITE_BYTES);
  const writeOne = async (start: number, span: number) => {
    const slots = Math.max(1, Math.floor((span - WRITE_BYTES) / 4096));
    const offset = start + prng.int(slots) * 4096;
    if (prng.int(2) === 0) fillText(prng, piece);
    else prng.fill(piece);
    await writer.write(offset, piece);
    written += piece.length;
  };
  const loop = (async () => {
    let next = performance.now();
    while (!stopping) {
      debt.hot += rates.hotBytesPerSecond * tickMs / 1000;
      debt.cold += rates.coldBytesPerSecond * tickMs / 1000;
      for (; debt.hot >= WRITE_BYTES && !stopping; debt.hot -= WRITE_BYTES) {
        await writeOne(hotStart, hotSet);
      }
      for (; debt.cold >= WRITE_BYTES && !stopping; debt.cold -= WRITE_BYTES) {
        await writeOne(0, sizeBytes);
      }
      next += tickMs;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      else next = performance.now();
    }
  })();
  let stopped: Promise<number> | null = null;
  return {
    get bytesWritten() {
      return written;
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        await loop;
        await writer.close();
        return written;
      })();
      return stopped;
    },
  };
}

/** The difference between a destination's basis and the final source image. */
export interface ImageDiff {
  /** 4 KiB pages that differ (the finest granularity a block device writes at). */
  pages: number;
  /** Those pages compressed as one `zstd -1` stream, bytes. */
  compressedBytes: number;
  /** 64 KiB blocks (presync's default block size) that differ. */
  blocks: number;
  /** Those blocks compressed as one `zstd -1` stream, bytes. */
  blockCompressedBytes: number;
}

/** Page size of the strict diff. */
const PAGE_BYTES = 4096;

/**
 * Compares `basis` with `source` page by page and compresses the differing 4 KiB pages (and,
 * separately, the differing 64 KiB blocks) with `zstd -1`, the full copy's codec, counting the
 * output: what any tool must move at least.
 */
export async function diffImages(basis: string, source: string): Promise<ImageDiff> {
  const pages = compressedCounter();
  const blocks = compressedCounter();
  const a = await Deno.open(basis);
  const b = await Deno.open(source);
  const diff = { pages: 0, blocks: 0 };
  try {
    const size = (await b.stat()).size;
    const bufA = new Uint8Array(8 * MiB);
    const bufB = new Uint8Array(8 * MiB);
    for (let at = 0; at < size; at += bufB.length) {
      const n = Math.min(bufB.length, size - at);
      await readFull(a, bufA.subarray(0, n));
      await readFull(b, bufB.subarray(0, n));
      const wa = new BigUint64Array(bufA.buffer, 0, Math.floor(n / 8));
      const wb = new BigUint64Array(bufB.buffer, 0, Math.floor(n / 8));
      for (let r = 0; r < n; r += REGION_BYTES) {
        const end = Math.min(n, r + REGION_BYTES);
        let blockDiffers = false;
        for (let p = r; p < end; p += PAGE_BYTES) {
          const pageEnd = Math.min(end, p + PAGE_BYTES);
          if (sameRegion(wa, wb, bufA, bufB, p, pageEnd)) continue;
          blockDiffers = true;
          diff.pages++;
          await pages.write(bufB.slice(p, pageEnd));
        }
        if (!blockDiffers) continue;
        diff.blocks++;
        await blocks.write(bufB.slice(r, end));
      }
    }
  } finally {
    a.close();
    b.close();
  }
  return {
    pages: diff.pages,
    compressedBytes: await pages.close(),
    blocks: diff.blocks,
    blockCompressedBytes: await blocks.close(),
  };
}

/** A `zstd -1` process whose output is only counted. */
function compressedCounter(): {
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<number>;
} {
  const zstd = new Deno.Command("zstd", {
    args: ["-1", "-q", "-c"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const counted = (async () => {
    let n = 0;
    for await (const chunk of zstd.stdout) n += chunk.length;
    return n;
  })();
  const writer = zstd.stdin.getWriter();
  return {
    write: (bytes) => writer.write(bytes),
    async close() {
      await writer.close();
      const n = await counted;
      await zstd.status;
      return n;
    },
  };
}

function sameRegion(
  wa: BigUint64Array,
  wb: BigUint64Array,
  a: Uint8Array,
  b: Uint8Array,
  start: number,
  end: number,
): boolean {
  const wordEnd = Math.min(wa.length, Math.floor(end / 8));
  for (let i = start / 8; i < wordEnd; i++) if (wa[i] !== wb[i]) return false;
  for (let i = wordEnd * 8; i < end; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Reads exactly `buffer.length` bytes (zeros past the end of the file). */
async function readFull(file: Deno.FsFile, buffer: Uint8Array): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const n = await file.read(buffer.subarray(done));
    if (n === null) {
      buffer.fill(0, done);
      return;
    }
    done += n;
  }
}

/** Whether two files are byte for byte equal (`cmp`), for the correctness checks. */
export async function sameFile(pathA: string, pathB: string): Promise<boolean> {
  const out = await new Deno.Command("cmp", { args: ["-s", pathA, pathB] }).output();
  return out.code === 0;
}
