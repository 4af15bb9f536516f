import { type Bitmap, blake3 } from "../core/mod.ts";
import { concatBytes, constantTimeEqual } from "../bytes.ts";
import { applyPatch, decodePatch, type PatchRun } from "../codec/block_patch.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileHandle } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";
import {
  decodeRecordHeader,
  encodeRecordHeader,
  KIND_DATA,
  KIND_PATCH,
  KIND_ZERO,
  maxPayloadLength,
  PATCH_DIGEST_BYTES,
  RECORD_HEADER_BYTES,
  type RecordHeader,
} from "./_staging_record.ts";
import type { StagingBackend } from "./replica_backend.ts";

/**
 * Bytes of log read per step when walking it. A walk holds at most three pieces: the one in
 * use, the one read ahead and one still referenced by writes in flight.
 */
const LOG_READ_BYTES = 4 * 1024 * 1024;

/** A verified block to append: its bytes (null: zeros) and their hash. */
export interface LogBlock {
  block: number;
  data: Uint8Array | null;
  hash: Uint8Array;
  /**
   * The patch (`codec/block_patch.ts`) that turns the block's committed copy into `data`:
   * the record holds only it (a patch record), not `data`.
   */
  patch?: Uint8Array;
}

/** The committed copy of a block, which a patch record is laid over. */
export type ReadBase = (block: number) => Promise<Uint8Array>;

/** What a record must agree with to be used (see {@linkcode StagingLog.forEachRecord}). */
export interface RecordCheck {
  /** Largest payload: the block size. */
  maxLength: number;
  /** Blocks of the volume. */
  blocks: number;
  /** The length of `block` (the last one may be short). */
  lengthOf(block: number): number;
  /** Whether the block was received (the record must be for a received block). */
  received(block: number): boolean;
  /** The hash recorded for the block in the staged hashes. */
  hashOf(block: number): Promise<Uint8Array>;
  /**
   * Whether the record of `block` at log offset `offset` was superseded by a fold (the block
   * re-dirtied after it was staged, docs/STORE.md "Folding"): skipped, never applied.
   */
  superseded?(block: number, offset: number): boolean;
}

/**
 * The append-only staging log (docs/STORE.md, "Staging log"): records of verified blocks,
 * only the first `length` bytes of which were acknowledged by a flush.
 */
export class StagingLog {
  readonly #file: FileHandle;
  readonly #path: string;
  readonly #readBase: ReadBase;
  #length: number;
  /** Log offset of each record appended since the log was opened, by block. */
  readonly #offsets = new Map<number, number>();
  /** Log offset of each record a fold superseded since the log was opened, by block. */
  readonly #superseded = new Map<number, number>();

  private constructor(file: FileHandle, path: string, length: number, readBase: ReadBase) {
    this.#file = file;
    this.#path = path;
    this.#length = length;
    this.#readBase = readBase;
  }

  /**
   * Opens the log of `backend`, cut back to the `flushedLength` bytes a flush acknowledged.
   * `readBase` reads a block's committed copy, which patch records are laid over when read.
   */
  static async open(
    backend: StagingBackend,
    flushedLength: number,
    readBase: ReadBase,
  ): Promise<StagingLog> {
    const path = `${backend.location}/log`;
    const file = await io(`open ${path}`, () => backend.openLog());
    try {
      const size = await io(`size ${path}`, () => file.size());
      if (size < flushedLength) {
        throw new PresyncError(
          ErrorCode.STORE_CORRUPT,
          `${path} is ${size} bytes but ${flushedLength} were flushed`,
        );
      }
      // Cut off whatever was appended after the last flush: it was never acknowledged.
      if (size > flushedLength) await io(`truncate ${path}`, () => file.truncate(flushedLength));
    } catch (err) {
      file.close();
      throw err;
    }
    return new StagingLog(file, path, flushedLength, readBase);
  }

  /** Bytes of records in the log. */
  get length(): number {
    return this.#length;
  }

  /** Appends one record per block, in one write; on failure the log is as it was. */
  async append(blocks: LogBlock[]): Promise<void> {
    const records = blocks.map(({ block, data, hash, patch }) => {
      if (patch) {
        const length = PATCH_DIGEST_BYTES + patch.length;
        const record = new Uint8Array(RECORD_HEADER_BYTES + length);
        encodeRecordHeader({ block, kind: KIND_PATCH, length, hash }, record);
        record.set(blake3(patch), RECORD_HEADER_BYTES);
        record.set(patch, RECORD_HEADER_BYTES + PATCH_DIGEST_BYTES);
        return record;
      }
      const record = new Uint8Array(RECORD_HEADER_BYTES + (data?.length ?? 0));
      encodeRecordHeader(
        { block, kind: data ? KIND_DATA : KIND_ZERO, length: data?.length ?? 0, hash },
        record,
      );
      if (data) record.set(data, RECORD_HEADER_BYTES);
      return record;
    });
    const batch = concatBytes(records);
    try {
      await io(`append to ${this.#path}`, () => this.#file.write(this.#length, batch));
    } catch (err) {
      await this.#file.truncate(this.#length).catch(() => {});
      throw err;
    }
    let offset = this.#length;
    for (let i = 0; i < records.length; i++) {
      this.#offsets.set(blocks[i].block, offset);
      this.#superseded.delete(blocks[i].block);
      offset += records[i].length;
    }
    this.#length += batch.length;
  }

  /**
   * Forgets where the records of `blocks` are (a fold superseded them: see `readBlock`); they
   * stay readable with `readSuperseded` until a block is appended again.
   */
  forget(blocks: Bitmap): void {
    for (const [start, length] of blocks.extents()) {
      for (let block = start; block < start + length; block++) {
        const offset = this.#offsets.get(block);
        if (offset === undefined) continue;
        this.#offsets.delete(block);
        this.#superseded.set(block, offset);
      }
    }
  }

  /** The bytes of `block` as its superseded record holds them (see `forget`), or null. */
  readSuperseded(block: number, length: number): Promise<Uint8Array | null> {
    const offset = this.#superseded.get(block);
    return offset === undefined ? Promise.resolve(null) : this.#readAt(block, offset, length);
  }

  /** Makes the records appended so far durable. */
  sync(): Promise<void> {
    return io(`sync ${this.#path}`, () => this.#file.sync());
  }

  /**
   * Calls `fn` for every record, in order, with its payload (empty for a zero block; for a
   * patch record, the patch), after checking it against `check`: a received block not seen
   * before, the hash recorded for it, a payload matching that hash (a patch record: a patch
   * of the block matching its own digest; the whole block was checked when it was staged,
   * laid over the committed copy that only the commit changes). A record `check.superseded`
   * names is skipped. Throws `STORE_CORRUPT` naming the record otherwise. The payload stays
   * valid after `fn` returns (it is a view of a piece of the log that the walk never reuses),
   * so a write of it may still be in flight; the next piece is read while the records of the
   * current one are checked and used.
   */
  async forEachRecord(
    check: RecordCheck,
    fn: (header: RecordHeader, payload: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const pieces = new LogPieces(
      this.#file,
      this.#path,
      this.#length,
      Math.max(LOG_READ_BYTES, RECORD_HEADER_BYTES + maxPayloadLength(KIND_PATCH, check.maxLength)),
    );
    try {
      const seen = new Set<number>();
      let checkedBytes = 0;
      for (let offset = 0; offset < this.#length;) {
        const header = decodeRecordHeader(
          await pieces.read(offset, RECORD_HEADER_BYTES),
          offset,
          check.maxLength,
        );
        const payload = await pieces.read(offset + RECORD_HEADER_BYTES, header.length);
        if (header.block < check.blocks && check.superseded?.(header.block, offset)) {
          offset += RECORD_HEADER_BYTES + header.length;
          continue;
        }
        const ok = header.block < check.blocks && check.received(header.block) &&
          !seen.has(header.block) &&
          constantTimeEqual(header.hash, await check.hashOf(header.block)) &&
          (header.kind === KIND_ZERO ||
            (header.kind === KIND_PATCH
              ? patchRuns(payload, check.lengthOf(header.block)) !== null
              : constantTimeEqual(blake3(payload), header.hash)));
        if (!ok) {
          throw corrupt(
            `staging record for block ${header.block} at byte ${offset} of ${this.#path} ` +
              `does not match its hash`,
          );
        }
        seen.add(header.block);
        await fn(
          header,
          header.kind === KIND_PATCH ? payload.subarray(PATCH_DIGEST_BYTES) : payload,
        );
        checkedBytes += header.length;
        if (checkedBytes >= YIELD_EVERY_BYTES) {
          checkedBytes = 0;
          await yieldToEventLoop();
        }
        offset += RECORD_HEADER_BYTES + header.length;
      }
    } finally {
      await pieces.settle();
    }
  }

  /**
   * The bytes (`length` of them) of `block` when it was appended since the log was opened,
   * checked against its hash; null otherwise.
   */
  async readBlock(block: number, length: number): Promise<Uint8Array | null> {
    const offset = this.#offsets.get(block);
    if (offset === undefined) return null;
    return await this.#readAt(block, offset, length);
  }

  async #readAt(block: number, offset: number, length: number): Promise<Uint8Array | null> {
    const record = new Uint8Array(RECORD_HEADER_BYTES + maxPayloadLength(KIND_PATCH, length));
    const n = await io(`read ${this.#path}`, () => this.#file.read(offset, record));
    const header = decodeRecordHeader(record.subarray(0, RECORD_HEADER_BYTES), offset, length);
    if (header.block !== block) {
      throw corrupt(`${this.#path}: no record of block ${block} at ${offset}`);
    }
    if (header.kind === KIND_ZERO) return new Uint8Array(length);
    const mismatch = () =>
      corrupt(`staging record of block ${block} in ${this.#path} does not match its hash`);
    if (n < RECORD_HEADER_BYTES + header.length) throw mismatch();
    let data: Uint8Array = record.subarray(
      RECORD_HEADER_BYTES,
      RECORD_HEADER_BYTES + header.length,
    );
    if (header.kind === KIND_PATCH) {
      const runs = patchRuns(data, length);
      if (!runs) throw mismatch();
      data = applyPatch(await this.#readBase(block), runs);
    }
    if (!constantTimeEqual(blake3(data), header.hash)) throw mismatch();
    return data;
  }

  /** Closes the file. Idempotent. */
  close(): void {
    this.#file.close();
  }
}

/**
 * The log read in consecutive pieces of `pieceBytes`, each into a buffer of its own, one
 * piece read ahead of the one in use; a range that straddles two pieces is copied out of
 * both. Ranges are asked for in increasing order.
 */
class LogPieces {
  readonly #file: FileHandle;
  readonly #path: string;
  readonly #length: number;
  readonly #pieceBytes: number;
  #start = 0;
  #bytes: Uint8Array = new Uint8Array(0);
  #next: Promise<Uint8Array> | null;

  constructor(file: FileHandle, path: string, length: number, pieceBytes: number) {
    this.#file = file;
    this.#path = path;
    this.#length = length;
    this.#pieceBytes = pieceBytes;
    this.#next = this.#readPiece(0);
  }

  /** The `length` bytes at `offset` (at or after the last range asked for). */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    while (offset >= this.#start + this.#bytes.length) await this.#advance(offset);
    const at = offset - this.#start;
    if (at + length <= this.#bytes.length) return this.#bytes.subarray(at, at + length);
    const head = this.#bytes.subarray(at);
    await this.#advance(offset);
    const rest = length - head.length;
    if (rest > this.#bytes.length) throw this.#short(offset);
    return concatBytes([head, this.#bytes.subarray(0, rest)]);
  }

  /** Waits for the read ahead, if any, to end (failed or not). */
  async settle(): Promise<void> {
    await this.#next?.catch(() => {});
  }

  /** Moves to the piece read ahead and starts reading the one after it. */
  async #advance(offset: number): Promise<void> {
    const next = this.#next;
    if (!next) throw this.#short(offset);
    const start = this.#start + this.#bytes.length;
    const bytes = await next;
    this.#start = start;
    this.#bytes = bytes;
    this.#next = bytes.length === 0 ? null : this.#readPiece(start + bytes.length);
  }

  #readPiece(offset: number): Promise<Uint8Array> | null {
    if (offset >= this.#length) return null;
    const piece = new Uint8Array(Math.min(this.#pieceBytes, this.#length - offset));
    const read = io(`read ${this.#path}`, () => this.#file.read(offset, piece))
      .then((n) => piece.subarray(0, n));
    // Awaited by #advance or settle; never an unhandled rejection meanwhile.
    read.catch(() => {});
    return read;
  }

  #short(offset: number): PresyncError {
    return corrupt(`${this.#path} ends inside the record at byte ${offset}`);
  }
}

/**
 * The runs of a patch record's `payload` when it holds a patch of a `length`-byte block
 * matching its digest; null otherwise.
 */
function patchRuns(payload: Uint8Array, length: number): PatchRun[] | null {
  const patch = payload.subarray(PATCH_DIGEST_BYTES);
  if (!constantTimeEqual(blake3(patch), payload.subarray(0, PATCH_DIGEST_BYTES))) return null;
  try {
    return decodePatch(patch, length);
  } catch {
    return null;
  }
}

function corrupt(message: string): PresyncError {
  return new PresyncError(ErrorCode.STORE_CORRUPT, message);
}
