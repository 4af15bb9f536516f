import { blake3 } from "../core/mod.ts";
import { constantTimeEqual } from "../bytes.ts";

/** Bytes of the checksum that ends every handshake record. */
export const RECORD_CHECK_BYTES = 8;

/**
 * Writes the checksum of a handshake record into its last 8 bytes: the first 8 bytes of
 * the unkeyed BLAKE3 hash of the bytes before them (`docs/PROTOCOL.md`, "Handshake"). Unkeyed
 * on purpose: it tells corruption in flight apart from a wrong key, which only the keyed
 * proofs can tell. Returns `record`.
 */
export function sealRecord(record: Uint8Array): Uint8Array {
  const body = record.length - RECORD_CHECK_BYTES;
  record.set(blake3(record.subarray(0, body), RECORD_CHECK_BYTES), body);
  return record;
}

/** True when a handshake record's last 8 bytes are the checksum of the rest. */
export function recordIntact(record: Uint8Array): boolean {
  const body = record.length - RECORD_CHECK_BYTES;
  return constantTimeEqual(
    record.subarray(body),
    blake3(record.subarray(0, body), RECORD_CHECK_BYTES),
  );
}
