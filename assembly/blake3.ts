// BLAKE3 (https://github.com/BLAKE3-team/BLAKE3/blob/master/blake3.pdf), written for presync.
//
// The hot path compresses four independent inputs at once, one per 32-bit lane of a v128
// (four chunks of one subtree, or four parent nodes of one tree level), the way the
// reference "hash4" SSE4.1 code does. Single compressions (chunk tails, root output,
// lazily merged parents) reuse the same code with every lane holding the same data.
//
// Hasher state lives at a caller-owned address of HASHER_SIZE bytes, so several hashers
// can be in flight; the scratch areas below are only used inside one exported call.

// Domain flags, section 2.1 of the specification.
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;
export const KEYED_HASH: u32 = 16;

const BLOCK_LEN: u32 = 64;
const CHUNK_LEN: u32 = 1024;
const OUT_LEN: u32 = 32;
// 2^54 chunks is the largest input the specification allows: the CV stack never exceeds 54.
const MAX_DEPTH: u32 = 54;
// Largest subtree hashed in one go; bounds the CV scratch to 32 KiB.
const MAX_SUBTREE_CHUNKS: u32 = 1024;

import { isZero } from "./zero";
import { compress4, IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7 } from "./blake3_compress";

// Hasher state layout (byte offsets).
const H_KEY = 0; // 8 x u32
const H_FLAGS = 32; // u32, KEYED_HASH or 0
const H_STACK_LEN = 36; // u32
const H_COUNTER = 40; // u64, index of the chunk being filled
const H_BUF_LEN = 48; // u32, bytes in the block buffer
const H_BLOCKS = 52; // u32, blocks of the current chunk already compressed
const H_CV = 64; // 8 x u32, chaining value of the current chunk
const H_BUF = 96; // 64 bytes, block buffer
const H_STACK = 160; // MAX_DEPTH x 32 bytes
export const HASHER_SIZE: u32 = H_STACK + MAX_DEPTH * OUT_LEN;

// Scratch, 16-byte aligned: transposed message, chaining values and output words.
const MSG_T = memory.data(16 * 16, 16);
const CV_T = memory.data(16 * 8, 16);
const OUT_T = memory.data(16 * 16, 16);
const CV_BUF = memory.data(OUT_LEN * MAX_SUBTREE_CHUNKS, 16);
// A finished node waiting to be compressed: chaining value, block, counter, length, flags.
const NODE_CV = memory.data(32, 16);
const NODE_BLOCK = memory.data(64, 16);
let nodeCounter: u64 = 0;
let nodeLen: u32 = 0;
let nodeFlags: u32 = 0;
const TMP_CV = memory.data(32, 16);
const ROOT_OUT = memory.data(64, 16);
const ONE_SHOT = memory.data(HASHER_SIZE, 16);

/** Transposes the 4x4 words at a, b, c, d (one row per lane) and stores them at dst. */
function transpose4(a: v128, b: v128, c: v128, d: v128, dst: usize): void {
  const ab01 = i32x4.shuffle(a, b, 0, 4, 1, 5);
  const ab23 = i32x4.shuffle(a, b, 2, 6, 3, 7);
  const cd01 = i32x4.shuffle(c, d, 0, 4, 1, 5);
  const cd23 = i32x4.shuffle(c, d, 2, 6, 3, 7);
  v128.store(dst, i64x2.shuffle(ab01, cd01, 0, 2), 0);
  v128.store(dst, i64x2.shuffle(ab01, cd01, 1, 3), 16);
  v128.store(dst, i64x2.shuffle(ab23, cd23, 0, 2), 32);
  v128.store(dst, i64x2.shuffle(ab23, cd23, 1, 3), 48);
}

/** Loads one 64-byte block from each of four inputs `stride` apart, transposed into MSG_T. */
function loadMessage4(ptr: usize, stride: usize): void {
  for (let q: usize = 0; q < 64; q += 16) {
    transpose4(
      v128.load(ptr + q),
      v128.load(ptr + stride + q),
      v128.load(ptr + 2 * stride + q),
      v128.load(ptr + 3 * stride + q),
      MSG_T + 4 * q,
    );
  }
}

/**
 * Hashes four inputs of `blocks` blocks each, `stride` bytes apart, with counters
 * `counter + lane` (or `counter` for every lane when `!incCounter`), writing four 32-byte
 * chaining values to `out`.
 */
function hash4(
  input: usize,
  stride: usize,
  blocks: u32,
  key: usize,
  counter: u64,
  incCounter: bool,
  flags: u32,
  flagsStart: u32,
  flagsEnd: u32,
  out: usize,
): void {
  for (let i: usize = 0; i < 8; i++) {
    v128.store(CV_T + 16 * i, i32x4.splat(load<u32>(key + 4 * i)));
  }
  const step: u64 = incCounter ? 1 : 0;
  let ctrLo = i32x4.splat(0);
  let ctrHi = i32x4.splat(0);
  ctrLo = i32x4.replace_lane(ctrLo, 0, <u32> counter);
  ctrHi = i32x4.replace_lane(ctrHi, 0, <u32> (counter >> 32));
  ctrLo = i32x4.replace_lane(ctrLo, 1, <u32> (counter + step));
  ctrHi = i32x4.replace_lane(ctrHi, 1, <u32> ((counter + step) >> 32));
  ctrLo = i32x4.replace_lane(ctrLo, 2, <u32> (counter + 2 * step));
  ctrHi = i32x4.replace_lane(ctrHi, 2, <u32> ((counter + 2 * step) >> 32));
  ctrLo = i32x4.replace_lane(ctrLo, 3, <u32> (counter + 3 * step));
  ctrHi = i32x4.replace_lane(ctrHi, 3, <u32> ((counter + 3 * step) >> 32));
  for (let b: u32 = 0; b < blocks; b++) {
    let blockFlags = flags;
    if (b == 0) blockFlags |= flagsStart;
    if (b == blocks - 1) blockFlags |= flagsEnd;
    loadMessage4(input + <usize> b * BLOCK_LEN, stride);
    compress4(CV_T, MSG_T, ctrLo, ctrHi, BLOCK_LEN, blockFlags, CV_T, false);
  }
  // Words 0-3 of every lane, then words 4-7: transpose back to one CV per lane.
  const w0 = v128.load(CV_T, 0), w1 = v128.load(CV_T, 16);
  const w2 = v128.load(CV_T, 32), w3 = v128.load(CV_T, 48);
  const w4 = v128.load(CV_T, 64), w5 = v128.load(CV_T, 80);
  const w6 = v128.load(CV_T, 96), w7 = v128.load(CV_T, 112);
  transpose4(w0, w1, w2, w3, OUT_T);
  transpose4(w4, w5, w6, w7, OUT_T + 64);
  for (let lane: usize = 0; lane < 4; lane++) {
    v128.store(out + 32 * lane, v128.load(OUT_T + 16 * lane));
    v128.store(out + 32 * lane + 16, v128.load(OUT_T + 64 + 16 * lane));
  }
}

/**
 * Compresses a single block: `cv` is 8 words, `block` 64 bytes. Writes the 8-word
 * chaining value to `out`, or all 16 output words when `xof`.
 */
function compress1(
  cv: usize,
  block: usize,
  counter: u64,
  blockLen: u32,
  flags: u32,
  out: usize,
  xof: bool,
): void {
  for (let i: usize = 0; i < 8; i++) {
    v128.store(CV_T + 16 * i, i32x4.splat(load<u32>(cv + 4 * i)));
  }
  for (let i: usize = 0; i < 16; i++) {
    v128.store(MSG_T + 16 * i, i32x4.splat(load<u32>(block + 4 * i)));
  }
  compress4(
    CV_T,
    MSG_T,
    i32x4.splat(<u32> counter),
    i32x4.splat(<u32> (counter >> 32)),
    blockLen,
    flags,
    OUT_T,
    xof,
  );
  const words: usize = xof ? 16 : 8;
  for (let i: usize = 0; i < words; i++) {
    store<u32>(out + 4 * i, i32x4.extract_lane(v128.load(OUT_T + 16 * i), 0));
  }
}

/** Hashes `n` inputs of `blocks` full blocks each, `stride` apart, into `n` CVs at `out`. */
function hashMany(
  input: usize,
  n: u32,
  stride: usize,
  blocks: u32,
  key: usize,
  counter: u64,
  incCounter: bool,
  flags: u32,
  flagsStart: u32,
  flagsEnd: u32,
  out: usize,
): void {
  const step: u64 = incCounter ? 1 : 0;
  let i: u32 = 0;
  for (; i + 4 <= n; i += 4) {
    hash4(
      input + <usize> i * stride,
      stride,
      blocks,
      key,
      counter + <u64> i * step,
      incCounter,
      flags,
      flagsStart,
      flagsEnd,
      out + <usize> i * OUT_LEN,
    );
  }
  for (; i < n; i++) {
    const cv = out + <usize> i * OUT_LEN;
    memory.copy(TMP_CV, key, 32);
    for (let b: u32 = 0; b < blocks; b++) {
      let blockFlags = flags;
      if (b == 0) blockFlags |= flagsStart;
      if (b == blocks - 1) blockFlags |= flagsEnd;
      compress1(
        TMP_CV,
        input + <usize> i * stride + <usize> b * BLOCK_LEN,
        counter + <u64> i * step,
        BLOCK_LEN,
        blockFlags,
        TMP_CV,
        false,
      );
    }
    memory.copy(cv, TMP_CV, 32);
  }
}

/**
 * Hashes a subtree of `chunks` full chunks (a power of two, at least 2) down to its two
 * children's chaining values, written as 64 bytes at `out`.
 */
function compressSubtreeToParent(
  input: usize,
  chunks: u32,
  key: usize,
  counter: u64,
  flags: u32,
  out: usize,
): void {
  hashMany(input, chunks, CHUNK_LEN, 16, key, counter, true, flags, CHUNK_START, CHUNK_END, CV_BUF);
  let n = chunks;
  while (n > 2) {
    n >>= 1;
    // Parent i reads CVs 2i and 2i+1 and overwrites CV i: hash4 loads before it stores.
    hashMany(CV_BUF, n, 64, 1, key, 0, false, flags | PARENT, 0, 0, CV_BUF);
  }
  memory.copy(out, CV_BUF, 64);
}

function chunkLen(s: usize): u32 {
  return load<u32>(s + H_BLOCKS) * BLOCK_LEN + load<u32>(s + H_BUF_LEN);
}

function chunkReset(s: usize, counter: u64): void {
  memory.copy(s + H_CV, s + H_KEY, 32);
  store<u64>(s + H_COUNTER, counter);
  store<u32>(s + H_BUF_LEN, 0);
  store<u32>(s + H_BLOCKS, 0);
}

function chunkStartFlag(s: usize): u32 {
  return load<u32>(s + H_BLOCKS) == 0 ? CHUNK_START : 0;
}

/** Appends `len` bytes (at most what fits in the chunk) to the current chunk. */
function chunkUpdate(s: usize, ptr: usize, len: usize): void {
  while (len > 0) {
    let bufLen = load<u32>(s + H_BUF_LEN);
    if (bufLen == BLOCK_LEN) {
      compress1(
        s + H_CV,
        s + H_BUF,
        load<u64>(s + H_COUNTER),
        BLOCK_LEN,
        load<u32>(s + H_FLAGS) | chunkStartFlag(s),
        s + H_CV,
        false,
      );
      store<u32>(s + H_BLOCKS, load<u32>(s + H_BLOCKS) + 1);
      bufLen = 0;
    }
    const take = min<usize>(BLOCK_LEN - bufLen, len);
    memory.copy(s + H_BUF + bufLen, ptr, take);
    store<u32>(s + H_BUF_LEN, bufLen + <u32> take);
    ptr += take;
    len -= take;
  }
}

/** Makes the current chunk the pending node. */
function chunkToNode(s: usize): void {
  const bufLen = load<u32>(s + H_BUF_LEN);
  memory.copy(NODE_CV, s + H_CV, 32);
  memory.fill(NODE_BLOCK, 0, 64);
  memory.copy(NODE_BLOCK, s + H_BUF, bufLen);
  nodeCounter = load<u64>(s + H_COUNTER);
  nodeLen = bufLen;
  nodeFlags = load<u32>(s + H_FLAGS) | chunkStartFlag(s) | CHUNK_END;
}

/** Makes the parent of the CVs at `left` and `right` the pending node. */
function parentToNode(s: usize, left: usize, right: usize): void {
  memory.copy(NODE_CV, s + H_KEY, 32);
  memory.copy(NODE_BLOCK, left, 32);
  memory.copy(NODE_BLOCK + 32, right, 32);
  nodeCounter = 0;
  nodeLen = BLOCK_LEN;
  nodeFlags = load<u32>(s + H_FLAGS) | PARENT;
}

function nodeChainingValue(out: usize): void {
  compress1(NODE_CV, NODE_BLOCK, nodeCounter, nodeLen, nodeFlags, out, false);
}

/** Merges stacked subtrees that are complete once `totalChunks` chunks precede the next. */
function mergeCvStack(s: usize, totalChunks: u64): void {
  const target = <u32> popcnt(totalChunks);
  let len = load<u32>(s + H_STACK_LEN);
  while (len > target) {
    const left = s + H_STACK + <usize> (len - 2) * OUT_LEN;
    compress1(s + H_KEY, left, 0, BLOCK_LEN, load<u32>(s + H_FLAGS) | PARENT, left, false);
    len--;
  }
  store<u32>(s + H_STACK_LEN, len);
}

function pushCv(s: usize, cv: usize, chunkCounter: u64): void {
  mergeCvStack(s, chunkCounter);
  const len = load<u32>(s + H_STACK_LEN);
  memory.copy(s + H_STACK + <usize> len * OUT_LEN, cv, 32);
  store<u32>(s + H_STACK_LEN, len + 1);
}

/** Starts a hash at `s`; `key` is 32 bytes for keyed mode or 0 for the plain hash. */
export function hasherInit(s: usize, key: usize): void {
  if (key == 0) {
    store<u32>(s + H_KEY, IV0, 0);
    store<u32>(s + H_KEY, IV1, 4);
    store<u32>(s + H_KEY, IV2, 8);
    store<u32>(s + H_KEY, IV3, 12);
    store<u32>(s + H_KEY, IV4, 16);
    store<u32>(s + H_KEY, IV5, 20);
    store<u32>(s + H_KEY, IV6, 24);
    store<u32>(s + H_KEY, IV7, 28);
    store<u32>(s + H_FLAGS, 0);
  } else {
    memory.copy(s + H_KEY, key, 32);
    store<u32>(s + H_FLAGS, KEYED_HASH);
  }
  store<u32>(s + H_STACK_LEN, 0);
  chunkReset(s, 0);
}

/** Feeds `len` bytes at `ptr` to the hasher at `s`. */
export function hasherUpdate(s: usize, ptr: usize, len: usize): void {
  const flags = load<u32>(s + H_FLAGS);
  const cl = chunkLen(s);
  if (cl > 0) {
    const take = min<usize>(CHUNK_LEN - cl, len);
    chunkUpdate(s, ptr, take);
    ptr += take;
    len -= take;
    if (len == 0) return;
    // The chunk is full and more input follows, so it is not the root: retire it.
    chunkToNode(s);
    nodeChainingValue(TMP_CV);
    const counter = load<u64>(s + H_COUNTER);
    pushCv(s, TMP_CV, counter);
    chunkReset(s, counter + 1);
  }
  let counter = load<u64>(s + H_COUNTER);
  while (len > <usize> CHUNK_LEN) {
    let subtreeChunks: u64 = min<u64>(
      <u64> 1 << (63 - clz<u64>(<u64> (len / CHUNK_LEN))),
      MAX_SUBTREE_CHUNKS,
    );
    // A subtree must start at a multiple of its own size in the tree.
    while ((counter & (subtreeChunks - 1)) != 0) subtreeChunks >>= 1;
    const subtreeLen = <usize> (subtreeChunks * CHUNK_LEN);
    if (subtreeChunks == 1) {
      hashMany(
        ptr,
        1,
        CHUNK_LEN,
        16,
        s + H_KEY,
        counter,
        true,
        flags,
        CHUNK_START,
        CHUNK_END,
        TMP_CV,
      );
      pushCv(s, TMP_CV, counter);
    } else {
      compressSubtreeToParent(ptr, <u32> subtreeChunks, s + H_KEY, counter, flags, NODE_BLOCK);
      pushCv(s, NODE_BLOCK, counter);
      pushCv(s, NODE_BLOCK + 32, counter + (subtreeChunks >> 1));
    }
    counter += subtreeChunks;
    ptr += subtreeLen;
    len -= subtreeLen;
  }
  chunkReset(s, counter);
  if (len > 0) {
    chunkUpdate(s, ptr, len);
    mergeCvStack(s, counter);
  }
}

/** Writes `outLen` bytes of the hash (extendable output) to `out`. Leaves `s` unchanged. */
export function hasherFinalize(s: usize, out: usize, outLen: usize): void {
  let remaining = load<u32>(s + H_STACK_LEN);
  const stack = s + H_STACK;
  if (remaining == 0 || chunkLen(s) > 0) {
    chunkToNode(s);
  } else {
    // The chunk is empty, so the last two stacked CVs are the root's children.
    remaining -= 2;
    parentToNode(s, stack + <usize> remaining * OUT_LEN, stack + <usize> (remaining + 1) * OUT_LEN);
  }
  while (remaining > 0) {
    remaining--;
    nodeChainingValue(TMP_CV);
    parentToNode(s, stack + <usize> remaining * OUT_LEN, TMP_CV);
  }
  // Root output: one compression per 64 output bytes, counter = output block index.
  let blockIndex: u64 = 0;
  while (outLen > 0) {
    compress1(NODE_CV, NODE_BLOCK, blockIndex, nodeLen, nodeFlags | ROOT, ROOT_OUT, true);
    const take = min<usize>(64, outLen);
    memory.copy(out, ROOT_OUT, take);
    out += take;
    outLen -= take;
    blockIndex++;
  }
}

/**
 * Hashes every `blockSize`-byte block of `len` bytes at `input` (the last may be short)
 * independently, writing one 32-byte hash per block to `out`. `key` as in hasherInit.
 */
export function hashBlocks(
  input: usize,
  len: usize,
  blockSize: usize,
  key: usize,
  out: usize,
): void {
  while (len > 0) {
    const take = min<usize>(blockSize, len);
    hasherInit(ONE_SHOT, key);
    hasherUpdate(ONE_SHOT, input, take);
    hasherFinalize(ONE_SHOT, out, OUT_LEN);
    input += take;
    len -= take;
    out += OUT_LEN;
  }
}

/**
 * Manifest entries for every `blockSize`-byte block of `len` bytes at `input` (the last may
 * be short): 32 zero bytes for an all-zero block (not hashed), else the block's BLAKE3.
 */
export function blockEntries(input: usize, len: usize, blockSize: usize, out: usize): void {
  while (len > 0) {
    const take = min<usize>(blockSize, len);
    if (isZero(input, take)) {
      memory.fill(out, 0, OUT_LEN);
    } else {
      hasherInit(ONE_SHOT, 0);
      hasherUpdate(ONE_SHOT, input, take);
      hasherFinalize(ONE_SHOT, out, OUT_LEN);
    }
    input += take;
    len -= take;
    out += OUT_LEN;
  }
}
