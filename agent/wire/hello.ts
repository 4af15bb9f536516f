import { ErrorCode, PresyncError } from "../errors.ts";
import { MAX_FRAME_PAYLOAD_LIMIT, MIN_FRAME_PAYLOAD_LIMIT } from "./frame.ts";
import { recordIntact, sealRecord } from "./_record_check.ts";

/** The session-protocol version this build speaks. */
export const PROTOCOL_VERSION = 2;
/** Bytes in a HELLO record (version 2: 56 bytes laid out as in version 1, then a checksum). */
export const HELLO_BYTES = 64;
/** Bytes every version's HELLO starts with: magic, role, version, status. */
export const HELLO_PREFIX_BYTES = 8;
/** Bytes in a version-1 HELLO (no checksum); a version-1 peer reads only these. */
export const V1_HELLO_BYTES = 56;
/** Bytes of a HELLO nonce. */
export const NONCE_BYTES = 32;
/** The HELLO magic, "PSYN". */
export const HELLO_MAGIC: Uint8Array = new Uint8Array([0x50, 0x53, 0x59, 0x4E]);
/** The largest window either side may announce, in bytes (2^30). */
export const MAX_WINDOW_BYTES = 2 ** 30;
/** The smallest window either side may announce, in bytes. */
export const MIN_WINDOW_BYTES = 1024;

/** Who sent a HELLO. */
export const HelloRole = { CLIENT: 1, SERVER: 2 } as const;

/**
 * HELLO status values (server only): `VERSION_UNSUPPORTED` refuses the client's version (the
 * server's own follows), `CORRUPT` says the client's HELLO failed its checksum.
 */
export const HelloStatus = { OK: 0, VERSION_UNSUPPORTED: 1, CORRUPT: 3 } as const;

/** The fields of a HELLO record (`docs/PROTOCOL.md`, "Session layer", "Handshake"). */
export interface Hello {
  /** {@linkcode HelloRole}. */
  role: number;
  /** Session-protocol version the sender speaks. */
  version: number;
  /** {@linkcode HelloStatus}; always 0 from a client. */
  status: number;
  /** Largest frame payload the sender accepts, in bytes. */
  maxFramePayload: number;
  /** Initial per-stream receive window the sender grants, in bytes. */
  streamWindow: number;
  /** Initial connection receive window the sender grants, in bytes. */
  connectionWindow: number;
  /** 32 fresh random bytes. */
  nonce: Uint8Array;
}

/** Encodes a HELLO into its 64 bytes, checksum included. */
export function encodeHello(hello: Hello): Uint8Array {
  const out = new Uint8Array(HELLO_BYTES);
  const view = new DataView(out.buffer);
  out.set(HELLO_MAGIC, 0);
  out[4] = hello.role;
  out[5] = hello.version;
  view.setUint16(6, hello.status, true);
  view.setUint32(8, hello.maxFramePayload, true);
  view.setUint32(12, hello.streamWindow, true);
  view.setUint32(16, hello.connectionWindow, true);
  out.set(hello.nonce.subarray(0, NONCE_BYTES), 24);
  return sealRecord(out);
}

/** The first 8 bytes of any version's HELLO. */
export interface HelloPrefix {
  /** {@linkcode HelloRole}. */
  role: number;
  /** Session-protocol version the sender speaks. */
  version: number;
  /** {@linkcode HelloStatus}. */
  status: number;
}

/**
 * Decodes the 8 bytes every version's HELLO starts with, so the reader knows how many more
 * to read.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` for a wrong magic ("not a presync client") or
 *   role
 */
export function decodeHelloPrefix(bytes: Uint8Array, expectedRole: number): HelloPrefix {
  const who = expectedRole === HelloRole.CLIENT ? "client" : "server";
  for (let i = 0; i < HELLO_MAGIC.length; i++) {
    if (bytes[i] !== HELLO_MAGIC[i]) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `not a presync ${who}: expected HELLO magic 50 53 59 4e ("PSYN"), received ` +
          `${hex(bytes.subarray(0, 4))}`,
      );
    }
  }
  if (bytes[4] !== expectedRole) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `expected a ${who} HELLO (role ${expectedRole}): received role ${bytes[4]}`,
    );
  }
  return { role: bytes[4], version: bytes[5], status: bytes[6] | (bytes[7] << 8) };
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Decodes and checks a version-2 HELLO (64 bytes) from `expectedRole`: checksum first, then
 * magic and role, then (for a status-0 HELLO) the limits.
 *
 * @throws {PresyncError} `HANDSHAKE_CORRUPT` (retryable) when the checksum fails,
 *   `PROTOCOL_VIOLATION` for a wrong length, magic or role, or limits out of range
 */
export function decodeHello(bytes: Uint8Array, expectedRole: number): Hello {
  const who = expectedRole === HelloRole.CLIENT ? "client" : "server";
  if (bytes.length !== HELLO_BYTES) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `expected a ${HELLO_BYTES}-byte presync ${who} HELLO: received ${bytes.length} bytes`,
    );
  }
  if (!recordIntact(bytes)) {
    throw new PresyncError(
      ErrorCode.HANDSHAKE_CORRUPT,
      `the ${who} HELLO arrived corrupted (checksum mismatch): the link damages data; ` +
        `retrying`,
      { retryable: true },
    );
  }
  const prefix = decodeHelloPrefix(bytes, expectedRole);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hello: Hello = {
    ...prefix,
    maxFramePayload: view.getUint32(8, true),
    streamWindow: view.getUint32(12, true),
    connectionWindow: view.getUint32(16, true),
    nonce: bytes.slice(24, 24 + NONCE_BYTES),
  };
  if (hello.status !== HelloStatus.OK || hello.version !== PROTOCOL_VERSION) return hello;
  checkRange(
    "maxFramePayload",
    hello.maxFramePayload,
    MIN_FRAME_PAYLOAD_LIMIT,
    MAX_FRAME_PAYLOAD_LIMIT,
  );
  checkRange("streamWindow", hello.streamWindow, MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
  checkRange("connectionWindow", hello.connectionWindow, hello.streamWindow, MAX_WINDOW_BYTES);
  return hello;
}

function checkRange(name: string, value: number, min: number, max: number): void {
  if (value < min || value > max) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `HELLO field ${name} must be from ${min} to ${max}: received ${value}`,
    );
  }
}

/** Returns 32 fresh random bytes for a HELLO. */
export function freshNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}
