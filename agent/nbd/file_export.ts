import { ErrorCode, PresyncError } from "../errors.ts";
import { PositionalFile } from "./_positional_file.ts";
import { fileAllocation, zeroFileRange, type ZeroOptions } from "./file_holes.ts";
import type { NbdExport } from "./nbd_export.ts";
import type { StatusExtent } from "./reply_codec.ts";

/** Options of {@linkcode FileExport.open}. */
export interface FileExportOptions {
  /** Export name. */
  name: string;
  /** Serve read-only (default false). */
  readOnly?: boolean;
  description?: string;
}

/**
 * A raw image file served as an NBD export. WRITE_ZEROES and TRIM punch holes where the
 * file system can (see {@linkcode zeroFileRange}; a TRIM it cannot punch is ignored, as the
 * specification allows), and BLOCK_STATUS reports the file's real holes.
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

  async writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    this.#writable();
    await zeroFileRange(this.#file, offset, length, options);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.#writable();
    await this.#file.punchHole(offset, length);
  }

  allocation(offset: number, length: number): Promise<StatusExtent[]> {
    return fileAllocation(this.#file, offset, length);
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
