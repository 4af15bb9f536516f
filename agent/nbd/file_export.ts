import { ErrorCode, PresyncError } from "../errors.ts";
import { PositionalFile } from "./_positional_file.ts";
import type { NbdExport } from "./nbd_export.ts";

/** Zero bytes written per call by `writeZeroes`. */
const ZERO_PIECE_BYTES = 1 << 20;

/** Options of {@linkcode FileExport.open}. */
export interface FileExportOptions {
  /** Export name. */
  name: string;
  /** Serve read-only (default false). */
  readOnly?: boolean;
  description?: string;
}

/**
 * A raw image file served as an NBD export. TRIM is accepted and ignored (the
 * specification allows it; Deno has no hole punching), so trimmed bytes keep their content.
 *
 * @example
 * ```ts ignore
 * const disk = await FileExport.open("/var/lib/vm/disk.img", { name: "disk" });
 * const server = new NbdServer([disk]);
 * ```
 */
export class FileExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly multiConn = true;
  readonly #file: PositionalFile;

  private constructor(file: PositionalFile, sizeBytes: number, options: FileExportOptions) {
    this.#file = file;
    this.sizeBytes = sizeBytes;
    this.name = options.name;
    this.readOnly = options.readOnly === true;
    this.description = options.description;
  }

  /** Opens `path`; its current size is the export's size. */
  static async open(path: string, options: FileExportOptions): Promise<FileExport> {
    const file = await PositionalFile.open(path, { readOnly: options.readOnly });
    try {
      return new FileExport(file, await file.size(), options);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  /** The underlying file, for wrappers that add behaviour around writes. */
  get file(): PositionalFile {
    return this.#file;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#file.read(offset, new Uint8Array(length));
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    await this.#file.read(offset, into);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    this.#writable();
    return this.#file.write(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#writable();
    const zeros = new Uint8Array(Math.min(length, ZERO_PIECE_BYTES));
    for (let at = 0; at < length; at += zeros.length) {
      await this.#file.write(offset + at, zeros.subarray(0, Math.min(zeros.length, length - at)));
    }
  }

  trim(_offset: number, _length: number): Promise<void> {
    this.#writable();
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return this.#file.sync();
  }

  #writable(): void {
    if (this.readOnly) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, `export ${this.name} is read-only`);
    }
  }

  /** Closes the file after pending I/O. Idempotent. */
  close(): Promise<void> {
    return this.#file.close();
  }
}
