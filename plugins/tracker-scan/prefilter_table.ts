import { PREFILTER_BYTES, PREFILTER_KEY_ID_BYTES } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";

/** Version of the table format (docs/STORE.md, "Pre-filter table"). */
export const PREFILTER_TABLE_VERSION = 1;
/** Bytes before the first entry. */
export const TABLE_HEADER_BYTES = 64;
/** Bytes of one entry: the block's pre-filter value, then its manifest entry (BLAKE3). */
export const TABLE_ENTRY_BYTES = PREFILTER_BYTES + ENTRY_BYTES;
/** Staged entries are written out once they reach this many bytes. */
export const TABLE_FLUSH_BYTES = 4 * 1024 * 1024;

/** "PSPF" as a little-endian u32. */
const MAGIC = 0x46505350;
/** Every entry pairs a pre-filter value with the BLAKE3 of the same bytes. */
const STATE_CONSISTENT = 1;
/** Entries are being written: some may be torn. Such a table is never used. */
const STATE_UPDATING = 2;

// Header fields (byte offsets).
const H_MAGIC = 0;
const H_VERSION = 4;
const H_STATE = 8;
const H_BLOCK_SIZE = 12;
const H_BLOCKS = 16;
const H_UUID = 24;
const H_KEY_ID = 40;

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? (slash === 0 ? "/" : ".") : path.slice(0, slash);
}

function uuidBytes(uuid: string): Uint8Array {
  return Uint8Array.from(uuid.replaceAll("-", "").match(/../g)!, (pair) => parseInt(pair, 16));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * The scan tracker's pre-filter table, `scan.prefilter` in the volume's state directory:
 * per block, the pre-filter value of some content of the block and the BLAKE3 manifest entry
 * of that same content, so a later scan that finds the same value under the same key knows
 * the block's BLAKE3 without computing it. All-zero entries mean "nothing known" (a sparse
 * file costs nothing for zero blocks and for a new table).
 *
 * The header names the volume, the block size and the key (by id). A table whose header does
 * not match, or that was being written when the agent died, is not trusted: its entries read
 * as zeros and the first {@linkcode PrefilterTable.flush} empties it. Writes are staged in
 * memory and flushed in three durable steps (mark updating, write entries, mark consistent),
 * so a crash at any instant leaves either a consistent table or one that is discarded.
 */
export class PrefilterTable {
  readonly path: string;
  readonly #file: FileHandle;
  readonly #identity: VolumeIdentity;
  readonly #keyId: Uint8Array;
  readonly #blocks: number;
  #trusted: boolean;
  #staged: { first: number; entries: Uint8Array }[] = [];
  #stagedBytes = 0;

  private constructor(
    path: string,
    file: FileHandle,
    identity: VolumeIdentity,
    keyId: Uint8Array,
    trusted: boolean,
  ) {
    this.path = path;
    this.#file = file;
    this.#identity = identity;
    this.#keyId = keyId;
    this.#blocks = blockCount(identity);
    this.#trusted = trusted;
  }

  /** Opens the table at `path` (created when missing) for `identity` under key `keyId`. */
  static async open(
    fs: FileSystem,
    path: string,
    identity: VolumeIdentity,
    keyId: Uint8Array,
  ): Promise<PrefilterTable> {
    if (keyId.length !== PREFILTER_KEY_ID_BYTES) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `pre-filter key id must be ${PREFILTER_KEY_ID_BYTES} bytes: received ${keyId.length}`,
      );
    }
    const created = !(await io(`open pre-filter table ${path}`, () => fs.exists(path)));
    const file = await io(`open pre-filter table ${path}`, () => fs.open(path, { create: true }));
    try {
      // A new table's name must survive a power cut with the entries flushed into it.
      if (created) await io(`create pre-filter table ${path}`, () => fs.syncDir(parentOf(path)));
      const size = await io(`size pre-filter table ${path}`, () => file.size());
      const header = new Uint8Array(TABLE_HEADER_BYTES);
      const n = await io(`read pre-filter table ${path}`, () => file.read(0, header));
      const view = new DataView(header.buffer);
      const trusted = n === TABLE_HEADER_BYTES &&
        size === TABLE_HEADER_BYTES + blockCount(identity) * TABLE_ENTRY_BYTES &&
        view.getUint32(H_MAGIC, true) === MAGIC &&
        view.getUint32(H_VERSION, true) === PREFILTER_TABLE_VERSION &&
        view.getUint32(H_STATE, true) === STATE_CONSISTENT &&
        view.getUint32(H_BLOCK_SIZE, true) === identity.blockSize &&
        view.getBigUint64(H_BLOCKS, true) === BigInt(blockCount(identity)) &&
        sameBytes(header.subarray(H_UUID, H_UUID + 16), uuidBytes(identity.uuid)) &&
        sameBytes(header.subarray(H_KEY_ID, H_KEY_ID + 16), keyId);
      return new PrefilterTable(path, file, identity, keyId, trusted);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * False when the table on disk was missing, damaged, made for another volume or key, or
   * torn by a crash: then every entry reads as zeros until the next flush rebuilds it.
   */
  get trusted(): boolean {
    return this.#trusted;
  }

  /** Entries of blocks `first … first+count-1` as flushed (zeros when not trusted). */
  async read(first: number, count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count * TABLE_ENTRY_BYTES);
    if (!this.#trusted) return out;
    await io(
      `read pre-filter table ${this.path}`,
      () => this.#file.read(TABLE_HEADER_BYTES + first * TABLE_ENTRY_BYTES, out),
    );
    return out;
  }

  /** Keeps `entries` for blocks from `first` until the next flush (they are not copied). */
  stage(first: number, entries: Uint8Array): void {
    this.#staged.push({ first, entries });
    this.#stagedBytes += entries.length;
  }

  /** Bytes staged and not yet flushed. */
  get stagedBytes(): number {
    return this.#stagedBytes;
  }

  #header(state: number): Uint8Array {
    const header = new Uint8Array(TABLE_HEADER_BYTES);
    const view = new DataView(header.buffer);
    view.setUint32(H_MAGIC, MAGIC, true);
    view.setUint32(H_VERSION, PREFILTER_TABLE_VERSION, true);
    view.setUint32(H_STATE, state, true);
    view.setUint32(H_BLOCK_SIZE, this.#identity.blockSize, true);
    view.setBigUint64(H_BLOCKS, BigInt(this.#blocks), true);
    header.set(uuidBytes(this.#identity.uuid), H_UUID);
    header.set(this.#keyId, H_KEY_ID);
    return header;
  }

  /**
   * Makes the staged entries durable: header marked updating and synced, entries written and
   * synced, header marked consistent and synced. An untrusted table is emptied first. Does
   * nothing when nothing is staged and the table is trusted.
   */
  async flush(): Promise<void> {
    if (this.#stagedBytes === 0 && this.#trusted) return;
    const rebuild = !this.#trusted;
    // Until this flush completes, the table must not be read: it may be half written.
    this.#trusted = false;
    const what = `write pre-filter table ${this.path}`;
    await io(what, async () => {
      await this.#file.write(0, this.#header(STATE_UPDATING));
      if (rebuild) {
        await this.#file.truncate(TABLE_HEADER_BYTES);
        await this.#file.truncate(TABLE_HEADER_BYTES + this.#blocks * TABLE_ENTRY_BYTES);
      }
      await this.#file.sync();
      for (const { first, entries } of this.#staged) {
        await this.#file.write(TABLE_HEADER_BYTES + first * TABLE_ENTRY_BYTES, entries);
      }
      await this.#file.sync();
      await this.#file.write(0, this.#header(STATE_CONSISTENT));
      await this.#file.sync();
    });
    this.#staged = [];
    this.#stagedBytes = 0;
    this.#trusted = true;
  }

  /** Closes the file; staged entries not flushed are dropped. Idempotent. */
  close(): void {
    this.#file.close();
  }
}
