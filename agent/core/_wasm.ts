/**
 * Loads the presync WebAssembly core once and owns its memory: allocation through the
 * module's `alloc`/`free`, a fixed scratch area for streaming inputs through in pieces,
 * and a byte view that is renewed whenever memory grows (growth detaches old views).
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../errors.ts";

/** The raw exports of `presync_core.wasm` (see `assembly/index.ts`). Addresses are u32. */
export interface CoreExports {
  memory: WebAssembly.Memory;
  HASHER_SIZE: WebAssembly.Global;
  PREFILTER_BYTES: WebAssembly.Global;
  alloc(size: number): number;
  free(ptr: number): void;
  hasherInit(state: number, key: number): void;
  hasherUpdate(state: number, ptr: number, len: number): void;
  hasherFinalize(state: number, out: number, outLen: number): void;
  hashBlocks(input: number, len: number, blockSize: number, key: number, out: number): void;
  blockEntries(input: number, len: number, blockSize: number, out: number): void;
  bitmapOr(dst: number, a: number, b: number, bytes: number): void;
  bitmapAnd(dst: number, a: number, b: number, bytes: number): void;
  bitmapAndNot(dst: number, a: number, b: number, bytes: number): void;
  bitmapPopcount(ptr: number, bytes: number): number;
  bitmapAndCount(a: number, b: number, bytes: number): number;
  bitmapAndNotCount(a: number, b: number, bytes: number): number;
  bitmapXorCount(a: number, b: number, bytes: number): number;
  bitmapExtents(ptr: number, nbits: number, from: number, out: number, maxRuns: number): number;
  bitmapFillRange(ptr: number, start: number, len: number, value: number): void;
  isZero(ptr: number, len: number): number;
  zeroBlocks(input: number, len: number, blockSize: number, out: number, bitOffset: number): void;
  diffHashes(oldPtr: number, newPtr: number, count: number, out: number, bitOffset: number): void;
  prefilterKeyBytes(blockSize: number): number;
  prefilterBlocks(input: number, len: number, blockSize: number, key: number, out: number): void;
}

/** Bytes of input copied into WASM memory per call; larger inputs go through in pieces. */
export const WINDOW_BYTES = 4 * 1024 * 1024;
/** Most blocks handled per batch call (bounds the hash output area). */
export const MAX_BATCH_BLOCKS = 4096;
/** Most [start, length] runs returned by one extents call. */
export const EXTENT_BATCH = 4096;
/** Longest BLAKE3 output the one-shot functions produce. */
export const MAX_HASH_OUTPUT = 1024;
/** Bytes of the output scratch area: MAX_BATCH_BLOCKS hashes. */
export const SCRATCH_OUT_BYTES = MAX_BATCH_BLOCKS * 32;

const WASM_URL = new URL("./presync_core.wasm", import.meta.url);

function readAbortMessage(memory: WebAssembly.Memory, ptr: number): string {
  if (ptr === 0) return "(no message)";
  // AssemblyScript strings: UTF-16 code units, byte length stored 4 bytes before the data.
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0];
  return String.fromCharCode(...new Uint16Array(memory.buffer, ptr, bytes >>> 1));
}

function instantiate(): CoreExports {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = Deno.readFileSync(WASM_URL);
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.WASM_CORE,
      `cannot read the WebAssembly core at ${WASM_URL.pathname}; run \`deno task build\``,
      { cause },
    );
  }
  // The abort handler runs after instantiation, once the memory export exists.
  const late: { memory?: WebAssembly.Memory } = {};
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
    env: {
      abort(message: number, _file: number, line: number, column: number): never {
        const text = late.memory ? readAbortMessage(late.memory, message >>> 0) : "(no memory)";
        throw new PresyncError(
          ErrorCode.WASM_CORE,
          `WebAssembly core aborted: ${text} at ${line}:${column}`,
        );
      },
    },
  });
  const exports = instance.exports as unknown as CoreExports;
  late.memory = exports.memory;
  return exports;
}

/** The instantiated core. */
export const core: CoreExports = instantiate();

let view = new Uint8Array(core.memory.buffer);

/** A byte view of all of WASM memory, renewed after growth. Do not keep it across calls. */
export function mem(): Uint8Array {
  if (view.buffer !== core.memory.buffer) view = new Uint8Array(core.memory.buffer);
  return view;
}

/** Allocates `size` bytes (16-byte aligned) in WASM memory. Throws when memory is full. */
export function alloc(size: number): number {
  const ptr = core.alloc(size) >>> 0;
  if (ptr === 0) {
    throw new PresyncError(
      ErrorCode.WASM_CORE,
      `WebAssembly core could not allocate ${size} bytes (memory is ${core.memory.buffer.byteLength} bytes)`,
    );
  }
  return ptr;
}

/** Frees memory from {@linkcode alloc}. */
export function free(ptr: number): void {
  core.free(ptr);
}

/** Fixed areas used inside one synchronous call; never held across calls. */
export const scratch = {
  /** WINDOW_BYTES of input. */
  input: alloc(WINDOW_BYTES),
  /** SCRATCH_OUT_BYTES of output: block hashes, bitmap bits or extended hash output. */
  out: alloc(Math.max(SCRATCH_OUT_BYTES, MAX_HASH_OUTPUT)),
  /** EXTENT_BATCH [start, length] u32 pairs. */
  extents: alloc(EXTENT_BATCH * 8),
  /** A 32-byte key. */
  key: alloc(32),
  /** One hasher state for one-shot hashing. */
  hasher: alloc(core.HASHER_SIZE.value as number),
};

/** Copies `data` into WASM memory at `ptr`. */
export function copyIn(data: Uint8Array, ptr: number): void {
  mem().set(data, ptr);
}

/** Copies `len` bytes at `ptr` out of WASM memory into a new array. */
export function copyOut(ptr: number, len: number): Uint8Array {
  return mem().slice(ptr, ptr + len);
}
