import { ErrorCode, PresyncError } from "../errors.ts";
import {
  alloc,
  copyIn,
  copyOut,
  core,
  free,
  MAX_HASH_OUTPUT,
  scratch,
  WINDOW_BYTES,
} from "./_wasm.ts";

/** Bytes in a BLAKE3 key and in a default-length hash. */
export const BLAKE3_KEY_BYTES = 32;

function checkOutLength(outLength: number): void {
  if (!Number.isInteger(outLength) || outLength < 1 || outLength > MAX_HASH_OUTPUT) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `BLAKE3 output length must be an integer from 1 to ${MAX_HASH_OUTPUT}: received ${outLength}`,
    );
  }
}

function checkKey(key: Uint8Array): void {
  if (key.length !== BLAKE3_KEY_BYTES) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `BLAKE3 key must be ${BLAKE3_KEY_BYTES} bytes: received ${key.length}`,
    );
  }
}

/** Feeds `data` to the hasher state at `state`, a window at a time. */
function update(state: number, data: Uint8Array): void {
  for (let offset = 0; offset < data.length; offset += WINDOW_BYTES) {
    const piece = data.subarray(offset, offset + WINDOW_BYTES);
    copyIn(piece, scratch.input);
    core.hasherUpdate(state, scratch.input, piece.length);
  }
}

function digest(state: number, outLength: number): Uint8Array {
  core.hasherFinalize(state, scratch.out, outLength);
  return copyOut(scratch.out, outLength);
}

/**
 * BLAKE3 hash of `data` (default 32 bytes; up to 1024 bytes of extended output).
 *
 * @example
 * ```ts
 * import { blake3 } from "./mod.ts";
 * const hash = blake3(new TextEncoder().encode("abc"));
 * console.assert(hash.length === 32);
 * ```
 */
export function blake3(data: Uint8Array, outLength = 32): Uint8Array {
  checkOutLength(outLength);
  core.hasherInit(scratch.hasher, 0);
  update(scratch.hasher, data);
  return digest(scratch.hasher, outLength);
}

/**
 * Keyed BLAKE3 of `data` under a 32-byte `key`: a MAC, used to authenticate peers.
 *
 * @example
 * ```ts
 * import { blake3Keyed } from "./mod.ts";
 * const mac = blake3Keyed(new Uint8Array(32).fill(7), new Uint8Array([1, 2, 3]));
 * console.assert(mac.length === 32);
 * ```
 */
export function blake3Keyed(key: Uint8Array, data: Uint8Array, outLength = 32): Uint8Array {
  checkKey(key);
  checkOutLength(outLength);
  copyIn(key, scratch.key);
  core.hasherInit(scratch.hasher, scratch.key);
  update(scratch.hasher, data);
  return digest(scratch.hasher, outLength);
}

const hasherRegistry = new FinalizationRegistry<number>(free);

/**
 * Incremental BLAKE3 for inputs that arrive in pieces. Release it with `free()` or
 * `using`; a hasher that is garbage collected unreleased is freed then.
 *
 * @example
 * ```ts
 * import { Blake3Hasher } from "./mod.ts";
 * using hasher = new Blake3Hasher();
 * hasher.update(new Uint8Array([1])).update(new Uint8Array([2]));
 * console.assert(hasher.digest().length === 32);
 * ```
 */
export class Blake3Hasher {
  #state: number;

  /** A plain hasher, or a keyed one when a 32-byte `key` is given. */
  constructor(key?: Uint8Array) {
    if (key) checkKey(key);
    this.#state = alloc(core.HASHER_SIZE.value as number);
    hasherRegistry.register(this, this.#state, this);
    if (key) copyIn(key, scratch.key);
    core.hasherInit(this.#state, key ? scratch.key : 0);
  }

  #live(): number {
    if (this.#state === 0) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "Blake3Hasher used after free()");
    }
    return this.#state;
  }

  /** Appends `data`. Returns this hasher. */
  update(data: Uint8Array): this {
    update(this.#live(), data);
    return this;
  }

  /** The hash of everything so far; the hasher may go on being updated after. */
  digest(outLength = 32): Uint8Array {
    checkOutLength(outLength);
    return digest(this.#live(), outLength);
  }

  /** Releases the WASM memory. Idempotent. */
  free(): void {
    if (this.#state === 0) return;
    hasherRegistry.unregister(this);
    free(this.#state);
    this.#state = 0;
  }

  [Symbol.dispose](): void {
    this.free();
  }
}
