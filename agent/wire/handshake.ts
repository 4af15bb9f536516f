import { ErrorCode, PresyncError } from "../errors.ts";
import { ExactReader } from "./_exact_reader.ts";
import { AuthTranscript, PROOF_BYTES } from "./auth_proof.ts";
import { concatBytes, constantTimeEqual } from "../bytes.ts";
import {
  decodeHello,
  decodeHelloPrefix,
  encodeHello,
  freshNonce,
  type Hello,
  HELLO_BYTES,
  HELLO_PREFIX_BYTES,
  HelloRole,
  HelloStatus,
  PROTOCOL_VERSION,
  V1_HELLO_BYTES,
} from "./hello.ts";
import { RECORD_CHECK_BYTES, recordIntact, sealRecord } from "./_record_check.ts";
import type { SessionConfig } from "./session_options.ts";
import type { ByteChannel } from "./transport.ts";

/** Bytes in a PROOF record: the proof, then a checksum. */
export const PROOF_RECORD_BYTES = PROOF_BYTES + RECORD_CHECK_BYTES;
/** Bytes in a RESULT record: status, proof, checksum. */
export const RESULT_BYTES = 44;

/** RESULT status values: `CORRUPT` says the client's PROOF failed its checksum. */
export const ResultStatus = { OK: 0, AUTH_FAILED: 2, CORRUPT: 3 } as const;

/** What a finished handshake hands to the session. */
export interface HandshakeResult {
  /** The channel's reader, positioned after the handshake. */
  reader: ReadableStreamDefaultReader<Uint8Array>;
  /** Bytes already read beyond the handshake (the start of the first frames). */
  leftover: Uint8Array;
  /** The channel's writer. */
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** The peer's HELLO (its limits and windows). */
  peer: Hello;
  /** Key this side tags its frames with. */
  sendKey: Uint8Array;
  /** Key the peer tags its frames with. */
  receiveKey: Uint8Array;
}

function localHello(config: SessionConfig, role: number, status = 0): Hello {
  return {
    role,
    version: PROTOCOL_VERSION,
    status,
    maxFramePayload: config.maxFramePayload,
    streamWindow: config.streamWindowBytes,
    connectionWindow: config.connectionWindowBytes,
    nonce: status === 0 ? freshNonce() : new Uint8Array(32),
  };
}

/** Runs `body` with a deadline that closes the channel; maps the resulting loss to TIMEOUT. */
async function withDeadline<T>(
  channel: ByteChannel,
  config: SessionConfig,
  body: (reader: ExactReader, writer: WritableStreamDefaultWriter<Uint8Array>) => Promise<T>,
): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    channel.close();
  }, config.handshakeTimeoutMs);
  const reader = channel.readable.getReader();
  const writer = channel.writable.getWriter();
  try {
    return await body(new ExactReader(reader), writer);
  } catch (error) {
    channel.close();
    if (timedOut) {
      throw new PresyncError(
        ErrorCode.TIMEOUT,
        `handshake with ${channel.remote} did not finish within ${config.handshakeTimeoutMs} ms`,
        { cause: error, retryable: true },
      );
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function write(writer: WritableStreamDefaultWriter<Uint8Array>, bytes: Uint8Array) {
  try {
    await writer.write(bytes);
  } catch (error) {
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `connection failed during the handshake: ${error}`,
      { cause: error, retryable: true },
    );
  }
}

function corrupt(message: string): PresyncError {
  return new PresyncError(
    ErrorCode.HANDSHAKE_CORRUPT,
    `${message}: the link damages data in flight (not a key problem); retrying`,
    { retryable: true },
  );
}

function record(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + RECORD_CHECK_BYTES);
  out.set(bytes);
  return sealRecord(out);
}

/**
 * Reads the server's HELLO and tells apart what a different version byte means: a real
 * refusal by an older (version 1) or newer server (`PROTOCOL_VERSION`, naming both versions
 * and what to upgrade), or corruption (`HANDSHAKE_CORRUPT`) — `docs/PROTOCOL.md`, "Version
 * negotiation".
 */
async function readServerHello(
  reader: ExactReader,
  remote: string,
): Promise<{ bytes: Uint8Array; hello: Hello }> {
  const prefixBytes = await reader.read(HELLO_PREFIX_BYTES, "server HELLO");
  const prefix = decodeHelloPrefix(prefixBytes, HelloRole.SERVER);
  if (prefix.version === 1) {
    const rest = await reader.read(V1_HELLO_BYTES - HELLO_PREFIX_BYTES, "server HELLO");
    // A version-1 refusal: status 1, reserved field and nonce zero. Anything else is damage.
    if (prefix.status !== HelloStatus.VERSION_UNSUPPORTED || rest.subarray(12).some((b) => b)) {
      throw corrupt(`the HELLO of server ${remote} arrived corrupted (version byte 1)`);
    }
    throw new PresyncError(
      ErrorCode.PROTOCOL_VERSION,
      `server ${remote} runs an older presync (session protocol 1); this agent speaks ` +
        `${PROTOCOL_VERSION}: upgrade presync on the destination (serve) to this release`,
    );
  }
  const bytes = concatBytes([
    prefixBytes,
    await reader.read(HELLO_BYTES - HELLO_PREFIX_BYTES, "server HELLO"),
  ]);
  const hello = decodeHello(bytes, HelloRole.SERVER); // HANDSHAKE_CORRUPT on a bad checksum
  if (hello.version > PROTOCOL_VERSION) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VERSION,
      `server ${remote} runs a newer presync (session protocol ${hello.version}); this ` +
        `agent speaks ${PROTOCOL_VERSION}: upgrade presync on the source (agent) to the ` +
        `destination's release`,
    );
  }
  if (hello.version !== PROTOCOL_VERSION) {
    throw corrupt(`server ${remote} answered with version ${hello.version}`);
  }
  if (hello.status === HelloStatus.VERSION_UNSUPPORTED || hello.status === HelloStatus.CORRUPT) {
    // The server speaks our version, so it saw a damaged HELLO from us.
    throw corrupt(`server ${remote} received this agent's HELLO corrupted`);
  }
  if (hello.status !== HelloStatus.OK) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `expected HELLO status 0, 1 or 3 from server ${remote}: received ${hello.status}`,
    );
  }
  return { bytes, hello };
}

/**
 * Runs the client side of the handshake (`docs/PROTOCOL.md`, "Handshake"): sends HELLO,
 * checks the server's, proves the key, checks the server's proof. Closes the channel on
 * failure. Every record carries a checksum, so a damaged record is `HANDSHAKE_CORRUPT`
 * (retryable) and only an intact record with a bad proof is `AUTH_FAILED`.
 *
 * @throws {PresyncError} `AUTH_FAILED`, `HANDSHAKE_CORRUPT`, `PROTOCOL_VERSION`,
 *   `PROTOCOL_VIOLATION`, `CONNECTION_LOST` or `TIMEOUT`
 */
export function clientHandshake(
  channel: ByteChannel,
  config: SessionConfig,
): Promise<HandshakeResult> {
  return withDeadline(channel, config, async (reader, writer) => {
    const remote = channel.remote;
    const hello = encodeHello(localHello(config, HelloRole.CLIENT));
    await write(writer, hello);
    const { bytes: serverHello, hello: peer } = await readServerHello(reader, remote);
    const transcript = new AuthTranscript(config.psk, hello, serverHello);
    const proof = transcript.clientProof();
    await write(writer, record(proof));
    const result = await reader.read(RESULT_BYTES, "authentication RESULT");
    if (!recordIntact(result)) throw corrupt(`the RESULT of server ${remote} arrived corrupted`);
    const status = new DataView(result.buffer).getUint32(0, true);
    if (status === ResultStatus.CORRUPT) {
      throw corrupt(`server ${remote} received this agent's PROOF corrupted`);
    }
    if (status === ResultStatus.AUTH_FAILED) {
      throw new PresyncError(
        ErrorCode.AUTH_FAILED,
        `server ${remote} rejected this agent's pre-shared key: check that both sites ` +
          `use the same key file`,
      );
    }
    if (status !== ResultStatus.OK) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `expected RESULT status 0, 2 or 3 from ${remote}: received ${status}`,
      );
    }
    if (!constantTimeEqual(result.subarray(4, 4 + PROOF_BYTES), transcript.serverProof(proof))) {
      throw new PresyncError(
        ErrorCode.AUTH_FAILED,
        `server ${remote} could not prove it knows the pre-shared key: it is not the ` +
          `expected peer, or its key differs`,
      );
    }
    return {
      reader: reader.reader,
      leftover: reader.takeLeftover(),
      writer,
      peer,
      sendKey: transcript.clientToServerKey(),
      receiveKey: transcript.serverToClientKey(),
    };
  });
}

/**
 * Reads the client's HELLO. A version-2 HELLO with a bad checksum is answered with a
 * status-3 HELLO (`HANDSHAKE_CORRUPT`); a HELLO of another version is read to its end (so the
 * refusal is not lost to a reset) and refused with a status-1 HELLO (`PROTOCOL_VERSION`),
 * unless its checksum shows that the version byte itself was damaged.
 */
async function readClientHello(
  reader: ExactReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  config: SessionConfig,
): Promise<{ bytes: Uint8Array; hello: Hello }> {
  const answer = (status: number) =>
    write(writer, encodeHello(localHello(config, HelloRole.SERVER, status))).catch(() => {});
  const prefixBytes = await reader.read(HELLO_PREFIX_BYTES, "client HELLO");
  const prefix = decodeHelloPrefix(prefixBytes, HelloRole.CLIENT);
  const length = prefix.version === 1 ? V1_HELLO_BYTES : HELLO_BYTES;
  const bytes = concatBytes([
    prefixBytes,
    await reader.read(length - HELLO_PREFIX_BYTES, "client HELLO"),
  ]);
  if (prefix.version !== 1 && !recordIntact(bytes)) {
    await answer(HelloStatus.CORRUPT);
    throw corrupt("the client HELLO arrived corrupted (checksum mismatch)");
  }
  if (prefix.version !== PROTOCOL_VERSION) {
    await answer(HelloStatus.VERSION_UNSUPPORTED);
    const upgrade = prefix.version < PROTOCOL_VERSION ? "the source (agent)" : "this server";
    throw new PresyncError(
      ErrorCode.PROTOCOL_VERSION,
      `client speaks session protocol version ${prefix.version}, this server speaks ` +
        `${PROTOCOL_VERSION}: upgrade presync on ${upgrade} so both sites run one release`,
    );
  }
  return { bytes, hello: decodeHello(bytes, HelloRole.CLIENT) };
}

/**
 * Runs the server side of the handshake. On every failure it logs one line naming the peer
 * and the cause, tells the client only what the protocol says (version, corruption or auth
 * status), and closes the channel.
 *
 * @throws {PresyncError} `AUTH_FAILED`, `HANDSHAKE_CORRUPT`, `PROTOCOL_VERSION`,
 *   `PROTOCOL_VIOLATION`, `CONNECTION_LOST` or `TIMEOUT`
 */
export async function serverHandshake(
  channel: ByteChannel,
  config: SessionConfig,
): Promise<HandshakeResult> {
  let received = () => 0;
  try {
    return await withDeadline(channel, config, async (reader, writer) => {
      received = () => reader.received;
      const { bytes: clientHello, hello: peer } = await readClientHello(reader, writer, config);
      const hello = encodeHello(localHello(config, HelloRole.SERVER));
      await write(writer, hello);
      const transcript = new AuthTranscript(config.psk, clientHello, hello);
      const proofRecord = await reader.read(PROOF_RECORD_BYTES, "client PROOF");
      const result = new Uint8Array(RESULT_BYTES);
      const refuse = async (status: number, error: PresyncError) => {
        new DataView(result.buffer).setUint32(0, status, true);
        await write(writer, sealRecord(result)).catch(() => {});
        throw error;
      };
      if (!recordIntact(proofRecord)) {
        await refuse(ResultStatus.CORRUPT, corrupt("the client PROOF arrived corrupted"));
      }
      const proof = proofRecord.subarray(0, PROOF_BYTES);
      if (!constantTimeEqual(proof, transcript.clientProof())) {
        await refuse(
          ResultStatus.AUTH_FAILED,
          new PresyncError(
            ErrorCode.AUTH_FAILED,
            "client proof does not verify: wrong pre-shared key, or a replayed handshake",
          ),
        );
      }
      result.set(transcript.serverProof(proof), 4);
      await write(writer, sealRecord(result));
      return {
        reader: reader.reader,
        leftover: reader.takeLeftover(),
        writer,
        peer,
        sendKey: transcript.serverToClientKey(),
        receiveKey: transcript.clientToServerKey(),
      };
    });
  } catch (error) {
    const code = error instanceof PresyncError ? error.code : "UNKNOWN";
    if (code === ErrorCode.CONNECTION_LOST && received() === 0) {
      // Closed before sending a byte: a port check, a health probe, or a client learning the
      // server's certificate. Not a failed handshake.
      config.logger({
        level: "info",
        event: "connection_abandoned",
        remote: channel.remote,
        message: `${channel.remote} closed the connection before sending anything`,
      });
      throw error;
    }
    const event = code === ErrorCode.AUTH_FAILED
      ? "auth_failed"
      : code === ErrorCode.HANDSHAKE_CORRUPT
      ? "handshake_corrupt"
      : "handshake_failed";
    config.logger({
      level: "warn",
      event,
      remote: channel.remote,
      message: `rejected connection from ${channel.remote} (${code}): ` +
        (error instanceof Error ? error.message : String(error)),
    });
    throw error;
  }
}
