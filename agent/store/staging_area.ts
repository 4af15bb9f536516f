import { Bitmap, blake3, isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";
import { isZeroEntry, ZERO_ENTRY } from "../volume/block_hashes.ts";
import { ManifestFile } from "../volume/manifest_file.ts";
import { blockCount, blockLength, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { RecordHeader } from "./_staging_record.ts";
import { type LogBlock, StagingLog } from "./_staging_log.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";
import { constantTimeEqual, joinBytes } from "../bytes.ts";
import { canPunchHoles, type ReplicaImage, type StagingBackend } from "./replica_backend.ts";
import { WriteWindow } from "./_write_window.ts";
import type { StagedBlock, StagedPatch, StageResult } from "../sync/destination.ts";
import { applyPatch, decodePatch } from "../codec/block_patch.ts";

/** The staging header (docs/STORE.md): which generation is being received, and how. */
export interface StagingHeader {
  generation: number;
  cutTimeMs: number;
  /**
   * Blocks are written straight into the image instead of the log (seeding: the first
   * generation of a new replica, which has no committed content to protect).
   */
  inPlace: boolean;
}

/**
 * The generation being received: the generation's dirty set, verified blocks, their hashes
 * in a manifest-shaped sparse file, and the received bitmap as of the last `flush()`. Blocks
 * go to an append-only log, or, in place (seeding a new replica), straight into the image.
 * Only what a flush made durable survives a crash; log records appended after it are cut
 * off when the area is opened again.
 */
export class StagingArea {
  readonly location: string;
  readonly generation: number;
  readonly cutTimeMs: number;
  /** Whether blocks are written into the image instead of the log (see StagingHeader). */
  readonly inPlace: boolean;
  /** The blocks this generation must contain. */
  readonly dirty: Bitmap;
  readonly #backend: StagingBackend;
  readonly #identity: VolumeIdentity;
  /** The log (absent in place). */
  readonly #log: StagingLog | null;
  /** The replica's image (written to in place only). */
  readonly #image: ReplicaImage;
  /** Staged block hashes, block i at 32·i (a sparse file). */
  readonly hashes: ManifestFile;
  /** Blocks appended (durable only up to the last flush). */
  readonly #received: Bitmap;
  /** The fold of this area, if any: records before `logLength` of `redirtied` are stale. */
  #fold: Fold | null;
  /**
   * Whether anything may differ from what the last flush made durable: set by every change
   * (and when the area is opened), cleared by a flush (set again when it fails).
   */
  #unflushed = true;

  private constructor(
    backend: StagingBackend,
    identity: VolumeIdentity,
    header: StagingHeader,
    parts: {
      dirty: Bitmap;
      received: Bitmap;
      log: StagingLog | null;
      hashes: ManifestFile;
      image: ReplicaImage;
      fold: Fold | null;
    },
  ) {
    this.#backend = backend;
    this.location = backend.location;
    this.#identity = identity;
    this.generation = header.generation;
    this.cutTimeMs = header.cutTimeMs;
    this.inPlace = header.inPlace;
    this.dirty = parts.dirty;
    this.#received = parts.received;
    this.#log = parts.log;
    this.hashes = parts.hashes;
    this.#image = parts.image;
    this.#fold = parts.fold;
  }

  /**
   * Starts staging `header.generation` (there must be no area yet). `image` is the
   * replica's, written to when `header.inPlace`.
   */
  static async create(
    backend: StagingBackend,
    identity: VolumeIdentity,
    header: StagingHeader,
    dirty: Bitmap,
    image: ReplicaImage,
  ): Promise<StagingArea> {
    await io(`create ${backend.location}`, () => backend.create());
    await io(`write ${backend.location}/dirty`, () => backend.write("dirty", dirty.serialize()));
    const { generation, cutTimeMs, inPlace } = header;
    const bytes = new TextEncoder().encode(
      JSON.stringify(inPlace ? { generation, cutTimeMs, inPlace } : { generation, cutTimeMs }),
    );
    // The header is written last: its presence means the area is complete.
    await io(`write ${backend.location}/header.json`, () => backend.write("header", bytes));
    const area = await StagingArea.open(backend, identity, image);
    if (!area) {
      throw new PresyncError(ErrorCode.IO, `staging area ${backend.location} vanished`);
    }
    return area;
  }

  /** The header of the area in `backend`, or null when there is none. No side effects. */
  static async readHeader(backend: StagingBackend): Promise<StagingHeader | null> {
    const bytes = await io(`read ${backend.location}/header.json`, () => backend.read("header"));
    return bytes ? parseHeader(bytes, backend.location) : null;
  }

  /** Opens the staging area in `backend`, or returns null when there is none. */
  static async open(
    backend: StagingBackend,
    identity: VolumeIdentity,
    image: ReplicaImage,
  ): Promise<StagingArea | null> {
    const header = await StagingArea.readHeader(backend);
    if (!header) return null;
    const where = backend.location;
    const blocks = blockCount(identity);
    const dirtyBytes = await io(`read ${where}/dirty`, () => backend.read("dirty"));
    if (!dirtyBytes) throw corrupt(`${where}/dirty is missing`);
    const dirty = Bitmap.deserialize(dirtyBytes, blocks);
    if (dirty.size !== blocks) {
      throw corrupt(`${where}/dirty has ${dirty.size} bits, not ${blocks}`);
    }
    const foldBytes = await io(`read ${where}/fold`, () => backend.read("fold"));
    let fold: Fold | null = null;
    if (foldBytes) {
      const record = decodeLogSet(foldBytes, blocks, `${where}/fold`);
      fold = { logLength: record.logLength, redirtied: record.set };
      dirty.or(fold.redirtied);
    }
    // After a fold, flushes record `received.folded`; until the first one, the received set
    // is the one before the fold without the re-dirtied blocks.
    const folded = fold &&
      await io(`read ${where}/received.folded`, () => backend.read("received.folded"));
    const receivedBytes = folded ||
      await io(`read ${where}/received`, () => backend.read("received"));
    const { logLength, set: received } = receivedBytes
      ? decodeLogSet(receivedBytes, blocks, `${where}/${folded ? "received.folded" : "received"}`)
      : { logLength: 0, set: new Bitmap(blocks) };
    if (fold && !folded) received.andNot(fold.redirtied);
    if (fold && logLength < fold.logLength) {
      throw corrupt(
        `${where}: the fold covers ${fold.logLength} bytes of log but ${logLength} were flushed`,
      );
    }
    let log: StagingLog | null = null;
    if (!header.inPlace) {
      log = await StagingLog.open(backend, logLength, (block) => readImage(image, identity, block));
    } else if (logLength !== 0) {
      throw corrupt(
        `${where}: an area staged in place has no log, but ${logLength} bytes were flushed`,
      );
    }
    const hashes = await ManifestFile.over(
      await io(`open ${where}/hashes`, () => backend.openHashes()),
      `${where}/hashes`,
      blocks,
      { create: true },
    );
    return new StagingArea(backend, identity, header, {
      dirty,
      received,
      log,
      hashes,
      image,
      fold,
    });
  }

  /** Whether the area was folded (see {@linkcode fold}). */
  get folded(): boolean {
    return this.#fold !== null;
  }

  /**
   * Folds `redirtied` into the generation (docs/STORE.md, "Folding"): the dirty set becomes
   * its union with them, and those of them received so far count as not received, to be
   * staged again in their newer version; every other block received stays. What was staged
   * is flushed first, then the `fold` record is written (the fold's one atomic step), then
   * the received set without the re-dirtied blocks. Once per area.
   *
   * @throws {PresyncError} `GENERATION_MISMATCH` when the area was folded already
   */
  async fold(redirtied: Bitmap): Promise<void> {
    if (this.#fold) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${this.generation} was folded already: it cannot be folded twice`,
      );
    }
    if (redirtied.size !== this.dirty.size) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `the fold names ${redirtied.size} blocks but the volume has ${this.dirty.size}`,
      );
    }
    await this.flush();
    this.#unflushed = true;
    const logLength = this.#log?.length ?? 0;
    const bytes = encodeLogSet(logLength, redirtied);
    await io(`write ${this.location}/fold`, () => this.#backend.write("fold", bytes));
    this.#fold = { logLength, redirtied: redirtied.clone() };
    this.dirty.or(redirtied);
    this.#received.andNot(redirtied);
    this.#log?.forget(redirtied);
    await this.#writeReceived(this.#received);
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
   * Verifies and stages blocks: appended to the log, or written into the image in place. A
   * block outside the generation's dirty set or of the wrong length is refused with
   * `GENERATION_MISMATCH`; one whose bytes do not match its hash (or a malformed patch) is
   * left out and listed in `rejected`. A patch is laid over the block's copy here (the one a
   * fold superseded when at hand, else the committed one); when the result does not match
   * its hash it is left out and listed in `resend`. One laid over the committed copy is
   * logged as the patch alone (the commit writes only its runs). Not durable until
   * {@linkcode flush}.
   */
  async stage(blocks: (StagedBlock | StagedPatch)[]): Promise<StageResult> {
    const result: StageResult = { staged: 0, duplicates: 0, rejected: [], resend: [] };
    let hashedBytes = 0;
    const accepted: LogBlock[] = [];
    // Marked received only once the whole batch passed: a batch refused half way (a block
    // outside the generation) leaves nothing marked that was not written.
    const seen = new Set<number>();
    for (const item of blocks) {
      const { block } = item;
      if (
        !Number.isInteger(block) || block < 0 || block >= this.dirty.size || !this.dirty.get(block)
      ) {
        throw new PresyncError(
          ErrorCode.GENERATION_MISMATCH,
          `block ${block} is not part of generation ${this.generation}`,
        );
      }
      if (this.#received.get(block) || seen.has(block)) {
        result.duplicates++;
        continue;
      }
      const expectedLength = blockLength(this.#identity, block);
      let sent: Uint8Array | null;
      let patch: Uint8Array | undefined;
      if ("patch" in item) {
        const rebuilt = await this.#rebuild(block, item.patch, expectedLength);
        if (!rebuilt) {
          result.rejected.push(block);
          continue;
        }
        sent = rebuilt.data;
        if (rebuilt.overCommitted) patch = item.patch;
      } else sent = item.data;
      // A block of zeros is stored as a zero record whichever way it was sent.
      const data = sent !== null && isZero(sent) && item.hash &&
          constantTimeEqual(blake3(sent), item.hash)
        ? null
        : sent;
      if (data === null) patch = undefined;
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
          ("patch" in item ? result.resend! : result.rejected).push(block);
          continue;
        }
      }
      accepted.push({ block, data, hash, ...(patch ? { patch } : {}) });
      seen.add(block);
      result.staged++;
    }
    if (accepted.length === 0) return result;
    for (const { block } of accepted) this.#received.set(block);
    this.#unflushed = true;
    try {
      if (this.#log) await this.#log.append(accepted);
      else await this.#writeInPlace(accepted);
    } catch (err) {
      // Nothing of this batch counts: forget it so it is asked for again.
      for (const { block } of accepted) this.#received.clear(block);
      throw err;
    }
    await writeEntries(this.hashes, accepted.map(({ block, hash }) => [block, hash]));
    return result;
  }

  /**
   * `patch` laid over the copy of `block` it applies to: the one a fold superseded when at
   * hand, else the image's (committed, or while seeding in place what arrived); null when it
   * is not a patch of a `length`-byte block. `overCommitted`: laid over the committed copy of
   * a logged area, so the patch alone rebuilds the block at the commit.
   */
  async #rebuild(
    block: number,
    patch: Uint8Array,
    length: number,
  ): Promise<{ data: Uint8Array; overCommitted: boolean } | null> {
    let runs;
    try {
      runs = decodePatch(patch, length);
    } catch {
      return null;
    }
    const superseded = await this.readSuperseded(block);
    const base = superseded ?? await readImage(this.#image, this.#identity, block);
    return { data: applyPatch(base, runs), overCommitted: !superseded && this.#log !== null };
  }

  /**
   * Seeding: the blocks go straight to their place in the image, each run of consecutive
   * data blocks in one write (large writes leave the event loop free while the disk works),
   * without copying when the blocks are consecutive views of one buffer (a local sync
   * stages the blocks of each read as views of it);
   * a zero block becomes a hole.
   */
  async #writeInPlace(accepted: LogBlock[]): Promise<void> {
    const image = this.#image;
    const { blockSize } = this.#identity;
    const blocks = [...accepted].sort((a, b) => a.block - b.block);
    const window = new WriteWindow(image.writeWindow);
    try {
      for (let i = 0; i < blocks.length;) {
        const offset = blocks[i].block * blockSize;
        if (!blocks[i].data) {
          const length = blockLength(this.#identity, blocks[i++].block);
          await window.add(() => zeroRange(image, offset, length));
          continue;
        }
        let end = i + 1;
        while (
          end < blocks.length && blocks[end].data && blocks[end].block === blocks[end - 1].block + 1
        ) end++;
        const run = end - i === 1
          ? blocks[i].data!
          : joinBytes(blocks.slice(i, end).map((b) => b.data!));
        await window.add(() => image.write(offset, run));
        i = end;
      }
      await window.drain();
    } finally {
      await window.settle();
    }
  }

  /**
   * Makes everything staged so far durable: syncs the log (or, in place, the image) and the
   * hashes, then records the received bitmap and log length atomically. Blocks are
   * acknowledged only after this. Nothing to do when nothing changed since the last flush
   * that succeeded (a commit right after the session's last flush).
   */
  async flush(): Promise<void> {
    if (!this.#unflushed) return;
    // Cleared first, so a change made while this flush runs keeps it set.
    this.#unflushed = false;
    try {
      if (this.#log) await this.#log.sync();
      else await this.#image.flush();
      await this.hashes.sync();
      await this.#writeReceived(this.#received);
    } catch (err) {
      this.#unflushed = true;
      throw err;
    }
  }

  async #writeReceived(received: Bitmap): Promise<void> {
    const bytes = encodeLogSet(this.#log?.length ?? 0, received);
    const name = this.#fold ? "received.folded" : "received";
    await io(`write ${this.location}/${name}`, () => this.#backend.write(name, bytes));
  }

  /**
   * Forgets every block received, durably (an area staged in place does so before its
   * blocks are zeroed, so a crash in between never resumes from blocks that are gone).
   */
  async forgetReceived(): Promise<void> {
    this.#unflushed = true;
    using none = new Bitmap(this.dirty.size);
    await this.#writeReceived(none);
    this.#received.and(none);
  }

  /**
   * Calls `fn` for every record of the log, in order, with the record's payload (empty for a
   * zero block) after checking the payload against its hash. Throws `STORE_CORRUPT` naming
   * the record when the log is damaged. An area staged in place has no records.
   */
  async forEachRecord(
    fn: (header: RecordHeader, payload: Uint8Array) => Promise<void>,
  ): Promise<void> {
    await this.#log?.forEachRecord({
      maxLength: this.#identity.blockSize,
      blocks: this.dirty.size,
      lengthOf: (block) => blockLength(this.#identity, block),
      received: (block) => this.#received.get(block),
      hashOf: (block) => this.hashes.read(block, 1),
      superseded: (block, offset) =>
        this.#fold !== null && offset < this.#fold.logLength && this.#fold.redirtied.get(block),
    }, fn);
  }

  /**
   * The bytes of `block` when it was staged (null otherwise: not received, or, in the log,
   * received before a restart), checked against its hash. A postcopy export reads blocks
   * that already arrived here instead of asking the source again.
   */
  async readStaged(block: number): Promise<Uint8Array | null> {
    if (!this.#log) return await this.#readInPlace(block);
    return await this.#log.readBlock(block, blockLength(this.#identity, block));
  }

  /**
   * The bytes of `block` as staged before a fold re-dirtied it, while they are at hand (in
   * the log since it was opened, or in place until it is staged again), checked against
   * their hash; null otherwise. A patch of the block's newer version is laid over them.
   */
  async readSuperseded(block: number): Promise<Uint8Array | null> {
    if (!this.#fold?.redirtied.get(block) || this.#received.get(block)) return null;
    const length = blockLength(this.#identity, block);
    if (this.#log) return await this.#log.readSuperseded(block, length);
    const data = await readImage(this.#image, this.#identity, block);
    const entry = await this.hashes.read(block, 1);
    if (isZeroEntry(entry)) return null;
    return constantTimeEqual(blake3(data), entry) ? data : null;
  }

  async #readInPlace(block: number): Promise<Uint8Array | null> {
    if (block < 0 || block >= this.dirty.size || !this.#received.get(block)) return null;
    const data = await readImage(this.#image, this.#identity, block);
    const entry = await this.hashes.read(block, 1);
    const ok = isZeroEntry(entry) ? isZero(data) : constantTimeEqual(blake3(data), entry);
    if (!ok) {
      throw corrupt(`block ${block} seeded into the image does not match its staged hash`);
    }
    return data;
  }

  /** Closes files and frees bitmaps (the image is the caller's). Idempotent. */
  close(): void {
    this.#log?.close();
    this.hashes.close();
    this.dirty.free();
    this.#received.free();
    this.#fold?.redirtied.free();
    this.#fold = null;
  }
}

/** A fold: the log length when it was taken and the blocks it re-dirtied. */
interface Fold {
  logLength: number;
  redirtied: Bitmap;
}

/**
 * The `received` and `fold` records: a length of the staging log (8 bytes, little-endian)
 * and a block set (`Bitmap.serialize`).
 */
function encodeLogSet(logLength: number, set: Bitmap): Uint8Array {
  const bitmap = set.serialize();
  const bytes = new Uint8Array(8 + bitmap.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(logLength), true);
  bytes.set(bitmap, 8);
  return bytes;
}

/** Reads a record of {@linkcode encodeLogSet} named `what`, of a volume of `blocks` blocks. */
function decodeLogSet(
  bytes: Uint8Array,
  blocks: number,
  what: string,
): { logLength: number; set: Bitmap } {
  if (bytes.length < 8) throw corrupt(`${what} is truncated`);
  return {
    logLength: Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)),
    set: Bitmap.deserialize(bytes.subarray(8), blocks),
  };
}

/**
 * Makes `[offset, offset + length)` of `image` read as zeros: a hole where the image can
 * punch one, else written zeros.
 */
export async function zeroRange(
  image: ReplicaImage,
  offset: number,
  length: number,
): Promise<void> {
  if (canPunchHoles(image) && await image.punchHole(offset, length)) return;
  const piece = 1 << 20;
  const zeros = new Uint8Array(Math.min(length, piece));
  for (let at = 0; at < length; at += piece) {
    await image.write(offset + at, zeros.subarray(0, Math.min(piece, length - at)));
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

/** The bytes of `block` in `image` (the last block may be short). */
async function readImage(
  image: ReplicaImage,
  identity: VolumeIdentity,
  block: number,
): Promise<Uint8Array> {
  const data = new Uint8Array(blockLength(identity, block));
  await io("read the replica's image", () => image.read(block * identity.blockSize, data));
  return data;
}

function corrupt(message: string): PresyncError {
  return new PresyncError(ErrorCode.STORE_CORRUPT, message);
}

function parseHeader(bytes: Uint8Array, location: string): StagingHeader {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (
      Number.isSafeInteger(value.generation) && value.generation > 0 &&
      Number.isFinite(value.cutTimeMs) && (value.inPlace === undefined || value.inPlace === true)
    ) {
      return {
        generation: value.generation,
        cutTimeMs: value.cutTimeMs,
        inPlace: value.inPlace === true,
      };
    }
  } catch {
    // Reported below.
  }
  throw corrupt(`${location}/header.json is damaged`);
}
