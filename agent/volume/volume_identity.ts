import { ErrorCode, PresyncError } from "../errors.ts";

/** Default block size: 64 KiB. */
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** Smallest allowed block size: 4 KiB. */
export const MIN_BLOCK_SIZE = 4 * 1024;
/** Largest allowed block size: 4 MiB. */
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024;
/** Longest volume name. */
export const MAX_VOLUME_NAME_LENGTH = 64;

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * What makes a volume the same volume on both sites. Fixed at `init`: a replaced source
 * image (new UUID) or a resized one (new size) is detected instead of silently mixed.
 */
export interface VolumeIdentity {
  /** Name, used in paths and on the wire: see {@linkcode validateVolumeName}. */
  readonly name: string;
  /** Size of the volume in bytes. */
  readonly sizeBytes: number;
  /** Block size in bytes: a power of two from 4 KiB to 4 MiB. */
  readonly blockSize: number;
  /** Random UUID chosen at init. */
  readonly uuid: string;
}

/**
 * Checks a volume name: 1 to 64 characters of letters, digits, `.`, `_` and `-`, starting
 * with a letter or digit (so never `.`, `..` or a path). Throws `INVALID_VOLUME_NAME`.
 */
export function validateVolumeName(name: unknown): string {
  if (
    typeof name !== "string" || name.length === 0 || name.length > MAX_VOLUME_NAME_LENGTH ||
    !NAME_PATTERN.test(name)
  ) {
    throw new PresyncError(
      ErrorCode.INVALID_VOLUME_NAME,
      `volume name must be 1 to ${MAX_VOLUME_NAME_LENGTH} letters, digits, '.', '_' or '-', ` +
        `starting with a letter or digit: received ${JSON.stringify(name)}`,
    );
  }
  return name;
}

/** Checks a block size: a power of two from 4 KiB to 4 MiB. Throws `INVALID_ARGUMENT`. */
export function validateBlockSize(blockSize: unknown): number {
  if (
    typeof blockSize !== "number" || !Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `block size must be a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes: ` +
        `received ${blockSize}`,
    );
  }
  return blockSize;
}

/** Number of blocks of a volume (the last one may be short). */
export function blockCount(identity: Pick<VolumeIdentity, "sizeBytes" | "blockSize">): number {
  return Math.ceil(identity.sizeBytes / identity.blockSize);
}

/** Byte length of block `block` (only the last block can be shorter than the block size). */
export function blockLength(identity: VolumeIdentity, block: number): number {
  return Math.min(identity.blockSize, identity.sizeBytes - block * identity.blockSize);
}

/** A new identity with a fresh random UUID. */
export function newVolumeIdentity(
  name: string,
  sizeBytes: number,
  blockSize: number,
): VolumeIdentity {
  return parseVolumeIdentity({ name, sizeBytes, blockSize, uuid: crypto.randomUUID() });
}

/** Validates an identity read from disk or from the wire. Throws on any bad field. */
export function parseVolumeIdentity(value: unknown): VolumeIdentity {
  const v = (value ?? {}) as Record<string, unknown>;
  const name = validateVolumeName(v.name);
  const blockSize = validateBlockSize(v.blockSize);
  const sizeBytes = v.sizeBytes;
  if (typeof sizeBytes !== "number" || !Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `volume ${name}: size must be a whole number of bytes: received ${sizeBytes}`,
    );
  }
  if (typeof v.uuid !== "string" || !UUID_PATTERN.test(v.uuid)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `volume ${name}: uuid must be a lowercase RFC 4122 UUID: received ${JSON.stringify(v.uuid)}`,
    );
  }
  return { name, sizeBytes, blockSize, uuid: v.uuid };
}

function gib(bytes: number): string {
  return bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30} GiB` : `${bytes} bytes`;
}

/**
 * What to do when a volume must start over with a full sync while the source keeps state for
 * it (a resized source image, a replica deleted or replaced at the destination): the words
 * every such error ends with (docs/STORE.md, "Creating, deleting and re-seeding").
 */
export function reseedHint(name: string): string {
  return `to re-seed it with a full sync, stop the agent, remove its state for the volume ` +
    `(--state DIR/${name}; for sync --local, its --state directory), delete the ` +
    `destination's replica (\`presync delete ${name} --yes\`) and start again`;
}

/**
 * Throws `VOLUME_MISMATCH` with a message saying what differs and what to do, unless the
 * two identities describe the same volume.
 */
export function assertSameVolume(expected: VolumeIdentity, received: VolumeIdentity): void {
  const problems: string[] = [];
  if (expected.name !== received.name) {
    problems.push(`name is ${expected.name} here but ${received.name} at the source`);
  }
  if (expected.uuid !== received.uuid) {
    problems.push(
      `uuid is ${expected.uuid} here but ${received.uuid} at the source (the source image was ` +
        `re-initialised or replaced)`,
    );
  }
  if (expected.sizeBytes !== received.sizeBytes) {
    problems.push(
      `size is ${gib(expected.sizeBytes)} here but ${gib(received.sizeBytes)} at the source`,
    );
  }
  if (expected.blockSize !== received.blockSize) {
    problems.push(
      `block size is ${expected.blockSize} here but ${received.blockSize} at the source`,
    );
  }
  if (problems.length > 0) {
    throw new PresyncError(
      ErrorCode.VOLUME_MISMATCH,
      `destination volume \`${expected.name}\` does not match the source: ${
        problems.join("; ")
      }. ` +
        `To re-seed it from this source, delete the destination's replica ` +
        `(\`presync delete ${expected.name} --yes\` where presync serve runs): the next sync ` +
        `creates it anew and sends everything.`,
    );
  }
}
