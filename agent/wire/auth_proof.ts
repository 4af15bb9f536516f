import { blake3Keyed } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { concatBytes } from "../bytes.ts";

/** Bytes in a pre-shared key. */
export const PSK_BYTES = 32;
/** Bytes in a PROOF record and in the proof of a RESULT record. */
export const PROOF_BYTES = 32;

const encoder = new TextEncoder();
const LABELS = {
  client: encoder.encode("presync/1 client proof"),
  server: encoder.encode("presync/1 server proof"),
  c2s: encoder.encode("presync/1 frame key c2s"),
  s2c: encoder.encode("presync/1 frame key s2c"),
};

/**
 * Throws unless `psk` is a 32-byte pre-shared key.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT`
 */
export function checkPsk(psk: Uint8Array): void {
  if (!(psk instanceof Uint8Array) || psk.length !== PSK_BYTES) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `the pre-shared key must be ${PSK_BYTES} bytes: received ${psk?.length} ` +
        `(generate one with: head -c 32 /dev/urandom > presync.psk)`,
    );
  }
}

/**
 * The proofs and frame keys of one handshake, all derived from the pre-shared key and the two
 * HELLOs as sent (`docs/PROTOCOL.md`, "Handshake"). Pure.
 *
 * @example
 * ```ts
 * import { AuthTranscript } from "./auth_proof.ts";
 * const t = new AuthTranscript(new Uint8Array(32), new Uint8Array(56), new Uint8Array(56));
 * console.assert(t.clientProof().length === 32);
 * ```
 */
export class AuthTranscript {
  readonly #psk: Uint8Array;
  readonly #hellos: Uint8Array;

  /** Binds a key to the client's and the server's HELLO bytes. */
  constructor(psk: Uint8Array, clientHello: Uint8Array, serverHello: Uint8Array) {
    checkPsk(psk);
    this.#psk = psk;
    this.#hellos = concatBytes([clientHello, serverHello]);
  }

  /** `Pc`: proves the client knows the key, bound to both fresh nonces. */
  clientProof(): Uint8Array {
    return blake3Keyed(this.#psk, concatBytes([LABELS.client, this.#hellos]));
  }

  /** `Ps`: proves the server knows the key, bound to the transcript and the client's proof. */
  serverProof(clientProof: Uint8Array): Uint8Array {
    return blake3Keyed(this.#psk, concatBytes([LABELS.server, this.#hellos, clientProof]));
  }

  /** The key frames from client to server are tagged with. */
  clientToServerKey(): Uint8Array {
    return blake3Keyed(this.#psk, concatBytes([LABELS.c2s, this.#hellos]));
  }

  /** The key frames from server to client are tagged with. */
  serverToClientKey(): Uint8Array {
    return blake3Keyed(this.#psk, concatBytes([LABELS.s2c, this.#hellos]));
  }
}
