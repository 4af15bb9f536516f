import { ErrorCode, PresyncError } from "../errors.ts";
import type { NbdExport } from "../nbd/nbd_export.ts";
import type { StatusExtent } from "../nbd/reply_codec.ts";

/** Options of {@linkcode DeferredExport}. */
export interface DeferredExportOptions {
  /** Export name, as clients ask for it. */
  name: string;
  /** Size in bytes (a volume's size never changes under an export). */
  sizeBytes: number;
  /** Whether the export will be read-only. */
  readOnly: boolean;
  /** How long a request waits for the switchover before failing with EIO, ms (default 120 s). */
  timeoutMs?: number;
  /**
   * Answers reads (and block status) before the switchover: the committed replica as it is,
   * for what QEMU reads while it starts (e.g. sector 0, to guess a disk's geometry). Absent:
   * reads wait for the switchover too. Writes always wait.
   */
  before?: NbdExport;
}

/**
 * An NBD export whose disk exists only from the switchover on: clients connect and finish
 * the handshake at once (name, size and flags are known), and every request waits until
 * {@linkcode resolve} gives the real export (the replica with the final generation), then
 * goes to it. This lets a destination QEMU started with `-incoming` open its disk before the
 * final cut exists. Reads before the switchover go to `before` when given (the committed
 * replica: QEMU reads sector 0 at start-up to guess a disk's geometry; the guest itself
 * runs only after the migration completed, after the switchover), else they wait; writes and
 * flushes always wait, so nothing is written to a disk that is not the source's final one. A
 * request still waiting after `timeoutMs`, or when {@linkcode fail} is called, fails (the
 * client gets EIO).
 */
export class DeferredExport implements NbdExport {
  readonly name: string;
  readonly description = "presync replica, waiting for the switchover";
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly multiConn = true;
  readonly #timeoutMs: number;
  readonly #ready: Promise<NbdExport>;
  #resolve!: (ex: NbdExport) => void;
  #reject!: (err: unknown) => void;
  #inner: NbdExport | null = null;
  #settled = false;
  readonly #before?: NbdExport;
  /** Requests that waited for the switchover. */
  waitedRequests = 0;
  /** Reads answered by `before`, ahead of the switchover. */
  earlyReads = 0;

  constructor(options: DeferredExportOptions) {
    this.name = options.name;
    this.sizeBytes = options.sizeBytes;
    this.readOnly = options.readOnly;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
    this.#before = options.before;
    this.#ready = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#ready.catch(() => {});
  }

  /** Whether the switchover happened (requests go to the real export). */
  get switched(): boolean {
    return this.#inner !== null;
  }

  /**
   * Resolves at the switchover; rejects when there will be none ({@linkcode fail}). A
   * migration's destination QEMU is let complete only after it (see
   * `MemoryTunnelOptions.beforeEnd`): reads before the switchover see the committed replica,
   * not the final generation.
   */
  whenSwitched(): Promise<void> {
    return this.#ready.then(() => {});
  }

  /**
   * The switchover: from now on every request, and every one waiting, goes to `ex`, which
   * must have this export's size and writability. Called at most once.
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` when `ex` does not match or it was settled already
   */
  resolve(ex: NbdExport): void {
    if (this.#settled || ex.sizeBytes !== this.sizeBytes || ex.readOnly !== this.readOnly) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `cannot switch export ${this.name} to ${ex.name}: expected ${this.sizeBytes} bytes, ` +
          `${this.readOnly ? "read-only" : "writable"}, not yet switched; received ` +
          `${ex.sizeBytes} bytes, ${ex.readOnly ? "read-only" : "writable"}` +
          (this.#settled ? ", already switched or failed" : ""),
      );
    }
    this.#settled = true;
    this.#inner = ex;
    this.#resolve(ex);
  }

  /** There will be no switchover: waiting and later requests fail with `err`. Idempotent. */
  fail(err: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#reject(err);
  }

  async #target(): Promise<NbdExport> {
    if (this.#inner) return this.#inner;
    this.waitedRequests++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() =>
        reject(
          new PresyncError(
            ErrorCode.TIMEOUT,
            `export ${this.name}: no switchover within ${Math.round(this.#timeoutMs / 1000)} s ` +
              `(the final generation was not cut); the disk is not served before it`,
          ),
        ), this.#timeoutMs);
    });
    try {
      return await Promise.race([this.#ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Where a read goes now: the real export, else `before`, else (waiting) the real one. */
  async #readTarget(): Promise<NbdExport> {
    if (this.#inner) return this.#inner;
    if (this.#before && !this.#settled) {
      this.earlyReads++;
      return this.#before;
    }
    return await this.#target();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return await (await this.#readTarget()).read(offset, length);
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    const ex = await this.#readTarget();
    if (ex.readInto) await ex.readInto(offset, into);
    else into.set(await ex.read(offset, into.length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await (await this.#target()).write(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await (await this.#target()).writeZeroes(offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    await (await this.#target()).trim(offset, length);
  }

  async flush(): Promise<void> {
    // Nothing was written before the switchover: a flush then has nothing to make durable.
    if (!this.#inner) return;
    await this.#inner.flush();
  }

  async allocation(offset: number, length: number): Promise<StatusExtent[]> {
    const ex = await this.#readTarget();
    if (ex.allocation) return await ex.allocation(offset, length);
    return [{ lengthBytes: Math.min(length, this.sizeBytes - offset), flags: 0 }];
  }
}
