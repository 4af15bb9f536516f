import { Bitmap, blake3, isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { atomicWrite, mkdirDurable, readWhole } from "../fs/atomic_write.ts";
import type { FileHandle, FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { ZERO_ENTRY } from "../volume/block_hashes.ts";
import { ManifestFile } from "../volume/manifest_file.ts";
import { blockCount, blockLength, type VolumeIdentity } from "../volume/volume_identity.ts";
import {
  decodeRecordHeader,
  encodeRecordHeader,
  KIND_DATA,
  KIND_ZERO,
  RECORD_HEADER_BYTES,
  type RecordHeader,
} from "./_staging_record.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";
import { concatBytes, constantTimeEqual } from "../bytes.ts";
import type { StagedBlock, StageResult } from "../sync/destination.ts";

/** The staging header (docs/STORE.md): which generation is being received. */
interface StagingHeader {
  generation: number;
  cutTimeMs: number;
}

const LOG_READ_BYTES = 8 * 1024 * 1024;

/**
 * The generation being received: an append-only log of verified blocks, their hashes in a
 * manifest-shaped sparse file, the generation's dirty set, and the received bitmap as of
 * the last `flush()`. Only what a flush made durable survives a crash; anything appended
 * after it is cut off when the area is opened again.
 */
export class StagingArea {
  readonly dir: string;
  readonly generation: number;
  readonly cutTimeMs: number;
  /** The blocks this generation must contain. */
  readonly dirty: Bitmap;
  readonly #fs: FileSystem;
  readonly #identity: VolumeIdentity;
  readonly #log: FileHandle;
  /** Staged block hashes, block i at 32·i (a sparse file). */
  readonly hashes: ManifestFile;
  /** Blocks appended (durable only up to the last flush). */
  readonly #received: Bitmap;
  #logLength: number;
  /** Log offset of each record appended since the area was opened, by block. */
  readonly #offsets = new Map<number, number>();

  private constructor(
    fs: FileSystem,
    dir: string,
    identity: VolumeIdentity,
    header: StagingHeader,
    dirty: Bitmap,
    received: Bitmap,
    log: FileHandle,
    logLength: number,
    hashes: ManifestFile,
  ) {
    this.#fs = fs;
    this.dir = dir;
    this.#identity = identity;
    this.generation = header.generation;
    this.cutTimeMs = header.cutTimeMs;
    this.dirty = dirty;
    this.#received = received;
    this.#log = log;
    this.#logLength = logLength;
    this.hashes = hashes;
  }

  /** Starts staging `generation` in `dir` (which must not exist yet). */
  static async create(
    fs: FileSystem,
    dir: string,
    identity: VolumeIdentity,
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
  ): Promise<StagingArea> {
    await io(`create ${dir}`, () => mkdirDurable(fs, dir));
    await io(`write ${dir}/dirty`, () => atomicWrite(fs, `${dir}/dirty`, dirty.serialize()));
    const header: StagingHeader = { generation, cutTimeMs };
    const bytes = new TextEncoder().encode(JSON.stringify(header));
    // The header is written last: its presence means the area is complete.
    await io(`write ${dir}/header.json`, () => atomicWrite(fs, `${dir}/header.json`, bytes));
    const area = await StagingArea.open(fs, dir, identity);
    if (!area) throw new PresyncError(ErrorCode.IO, `staging area ${dir} vanished after creation`);
    return area;
  }

  /** Opens the staging area in `dir`, or returns null when there is none. */
  static async open(
    fs: FileSystem,
    dir: string,
    identity: VolumeIdentity,
  ): Promise<StagingArea | null> {
    const headerBytes = await io(
      `read ${dir}/header.json`,
      () => readWhole(fs, `${dir}/header.json`),
    );
    if (!headerBytes) return null;
    const header = parseHeader(headerBytes, dir);
    const blocks = blockCount(identity);
    const dirtyBytes = await io(`read ${dir}/dirty`, () => readWhole(fs, `${dir}/dirty`));
    if (!dirtyBytes) throw corrupt(`${dir}/dirty is missing`);
    const dirty = Bitmap.deserialize(dirtyBytes, blocks);
    if (dirty.size !== blocks) throw corrupt(`${dir}/dirty has ${dirty.size} bits, not ${blocks}`);
    let received = new Bitmap(blocks);
    let logLength = 0;
    const receivedBytes = await io(`read ${dir}/received`, () => readWhole(fs, `${dir}/received`));
    if (receivedBytes) {
      if (receivedBytes.length < 8) throw corrupt(`${dir}/received is truncated`);
      logLength = Number(
        new DataView(receivedBytes.buffer, receivedBytes.byteOffset).getBigUint64(0, true),
      );
      received.free();
      received = Bitmap.deserialize(receivedBytes.subarray(8), blocks);
    }
    const log = await io(`open ${dir}/log`, () => fs.open(`${dir}/log`, { create: true }));
    const size = await log.size();
    if (size < logLength) {
      log.close();
      throw corrupt(`${dir}/log is ${size} bytes but ${logLength} were flushed`);
    }
    // Cut off whatever was appended after the last flush: it was never acknowledged.
    if (size > logLength) await io(`truncate ${dir}/log`, () => log.truncate(logLength));
    const hashes = await ManifestFile.open(fs, `${dir}/hashes`, blocks, { create: true });
    return new StagingArea(fs, dir, identity, header, dirty, received, log, logLength, hashes);
  }

  /** A copy of the blocks received so far (durable or not yet flushed). */
  received(): Bitmap {
    return this.#received.clone();
  }

  /** Whether every block of the dirty set has been received. */
  isComplete(): boolean {
    using missing = this.dirty.clone().andNot(this.#received);
    return missing.isEmpty();
  }

  /**
   * Verifies and appends blocks. A block outside the generation's dirty set or of the wrong
   * length is refused with `GENERATION_MISMATCH`; one whose bytes do not match its hash is
   * left out and listed in `rejected`. Not durable until {@linkcode flush}.
   */
  async stage(blocks: StagedBlock[]): Promise<StageResult> {
    const result: StageResult = { staged: 0, duplicates: 0, rejected: [] };
    let hashedBytes = 0;
    const records: Uint8Array[] = [];
    const entries: [number, Uint8Array][] = [];
    for (const item of blocks) {
      const { block } = item;
      // A block of zeros is stored as a zero record whichever way it was sent.
      const data = item.data !== null && isZero(item.data) && item.hash &&
          constantTimeEqual(blake3(item.data), item.hash)
        ? null
        : item.data;
      if (
        !Number.isInteger(block) || block < 0 || block >= this.dirty.size || !this.dirty.get(block)
      ) {
        throw new PresyncError(
          ErrorCode.GENERATION_MISMATCH,
          `block ${block} is not part of generation ${this.generation}`,
        );
      }
      if (this.#received.get(block)) {
        result.duplicates++;
        continue;
      }
      const expectedLength = blockLength(this.#identity, block);
      if (data !== null && data.length !== expectedLength) {
        throw new PresyncError(
          ErrorCode.GENERATION_MISMATCH,
          `block ${block} must be ${expectedLength} bytes: received ${data.length}`,
        );
      }
      let hash: Uint8Array = ZERO_ENTRY;
      if (data !== null) {
        hash = blake3(data);
        hashedBytes += data.length;
        if (hashedBytes >= YIELD_EVERY_BYTES) {
          // Let the rest of the process (sessions, an NBD server) run between slices.
          hashedBytes = 0;
          await yieldToEventLoop();
        }
        if (!item.hash || !constantTimeEqual(hash, item.hash)) {
          result.rejected.push(block);
          continue;
        }
      }
      const record = new Uint8Array(RECORD_HEADER_BYTES + (data?.length ?? 0));
      encodeRecordHeader(
        { block, kind: data ? KIND_DATA : KIND_ZERO, length: data?.length ?? 0, hash },
        record,
      );
      if (data) record.set(data, RECORD_HEADER_BYTES);
      records.push(record);
      entries.push([block, hash]);
      this.#received.set(block);
      result.staged++;
    }
    if (records.length > 0) {
      const batch = concatBytes(records);
      try {
        await io(`append to ${this.dir}/log`, () => this.#log.write(this.#logLength, batch));
      } catch (err) {
        // Nothing of this batch counts: forget it so it is asked for again.
        for (const [block] of entries) this.#received.clear(block);
        await this.#log.truncate(this.#logLength).catch(() => {});
        throw err;
      }
      let offset = this.#logLength;
      for (let i = 0; i < records.length; i++) {
        this.#offsets.set(entries[i][0], offset);
        offset += records[i].length;
      }
      this.#logLength += batch.length;
      await writeEntries(this.hashes, entries);
    }
    return result;
  }

  /**
   * Makes everything staged so far durable: syncs the log and the hashes, then records the
   * received bitmap and log length atomically. Blocks are acknowledged only after this.
   */
  async flush(): Promise<void> {
    await io(`sync ${this.dir}/log`, () => this.#log.sync());
    await this.hashes.sync();
    const bitmap = this.#received.serialize();
    const bytes = new Uint8Array(8 + bitmap.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(this.#logLength), true);
    bytes.set(bitmap, 8);
    await io(
      `write ${this.dir}/received`,
      () => atomicWrite(this.#fs, `${this.dir}/received`, bytes),
    );
  }

  /**
   * Calls `fn` for every record of the log, in order, with the record's payload (empty for a
   * zero block) after checking the payload against its hash. Throws `STORE_CORRUPT` naming
   * the record when the log is damaged.
   */
  async forEachRecord(
    fn: (header: RecordHeader, payload: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const maxLength = this.#identity.blockSize;
    let buffer = new Uint8Array(0);
    let bufferStart = 0;
    const readAt = async (offset: number, length: number): Promise<Uint8Array> => {
      if (offset < bufferStart || offset + length > bufferStart + buffer.length) {
        buffer = new Uint8Array(Math.max(LOG_READ_BYTES, length));
        const n = await io(`read ${this.dir}/log`, () => this.#log.read(offset, buffer));
        buffer = buffer.subarray(0, n);
        bufferStart = offset;
        if (n < length) throw corrupt(`${this.dir}/log ends inside the record at byte ${offset}`);
      }
      return buffer.subarray(offset - bufferStart, offset - bufferStart + length);
    };
    using seen = new Bitmap(this.dirty.size);
    let checkedBytes = 0;
    for (let offset = 0; offset < this.#logLength;) {
      const header = decodeRecordHeader(
        await readAt(offset, RECORD_HEADER_BYTES),
        offset,
        maxLength,
      );
      const payload = await readAt(offset + RECORD_HEADER_BYTES, header.length);
      // The record must be for a received block not seen before, carry the hash recorded
      // for that block, and its payload must match that hash.
      const ok = header.block < this.dirty.size && this.#received.get(header.block) &&
        !seen.get(header.block) &&
        constantTimeEqual(header.hash, await this.hashes.read(header.block, 1)) &&
        (header.kind === KIND_ZERO || constantTimeEqual(blake3(payload), header.hash));
      if (ok) seen.set(header.block);
      if (!ok) {
        throw corrupt(
          `staging record for block ${header.block} at byte ${offset} of ${this.dir}/log ` +
            `does not match its hash`,
        );
      }
      await fn(header, payload);
      checkedBytes += header.length;
      if (checkedBytes >= YIELD_EVERY_BYTES) {
        checkedBytes = 0;
        await yieldToEventLoop();
      }
      offset += RECORD_HEADER_BYTES + header.length;
    }
  }

  /**
   * The bytes of `block` when it was staged since the area was opened (null otherwise: not
   * received, or received before a restart), checked against its hash. A postcopy export
   * reads blocks that already arrived here instead of asking the source again.
   */
  async readStaged(block: number): Promise<Uint8Array | null> {
    const offset = this.#offsets.get(block);
    if (offset === undefined) return null;
    const length = blockLength(this.#identity, block);
    const record = new Uint8Array(RECORD_HEADER_BYTES + length);
    const n = await io(`read ${this.dir}/log`, () => this.#log.read(offset, record));
    const header = decodeRecordHeader(record.subarray(0, RECORD_HEADER_BYTES), offset, length);
    if (header.block !== block) {
      throw corrupt(`${this.dir}/log: no record of block ${block} at ${offset}`);
    }
    if (header.kind === KIND_ZERO) return new Uint8Array(length);
    const payload = record.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + header.length);
    if (n < record.length || !constantTimeEqual(blake3(payload), header.hash)) {
      throw corrupt(`staging record of block ${block} in ${this.dir}/log does not match its hash`);
    }
    return payload;
  }

  /** Closes files and frees bitmaps. Idempotent. */
  close(): void {
    this.#log.close();
    this.hashes.close();
    this.dirty.free();
    this.#received.free();
  }
}

/** Writes manifest entries, one write per run of consecutive blocks. */
async function writeEntries(file: ManifestFile, entries: [number, Uint8Array][]): Promise<void> {
  entries.sort((x, y) => x[0] - y[0]);
  for (let i = 0; i < entries.length;) {
    let end = i + 1;
    while (end < entries.length && entries[end][0] === entries[end - 1][0] + 1) end++;
    const run = new Uint8Array((end - i) * 32);
    for (let k = i; k < end; k++) run.set(entries[k][1], (k - i) * 32);
    await file.write(entries[i][0], run);
    i = end;
  }
}

function corrupt(message: string): PresyncError {
  return new PresyncError(ErrorCode.STORE_CORRUPT, message);
}

function parseHeader(bytes: Uint8Array, dir: string): StagingHeader {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (
      Number.isSafeInteger(value.generation) && value.generation > 0 &&
      Number.isFinite(value.cutTimeMs)
    ) {
      return { generation: value.generation, cutTimeMs: value.cutTimeMs };
    }
  } catch {
    // Reported below.
  }
  throw corrupt(`${dir}/header.json is damaged`);
}
