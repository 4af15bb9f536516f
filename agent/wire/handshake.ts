import { ErrorCode, PresyncError } from "../errors.ts";
import { ExactReader } from "./_exact_reader.ts";
import { AuthTranscript, PROOF_BYTES } from "./auth_proof.ts";
import { constantTimeEqual } from "../bytes.ts";
import {
  decodeHello,
  encodeHello,
  freshNonce,
  type Hello,
  HELLO_BYTES,
  HelloRole,
  HelloStatus,
  PROTOCOL_VERSION,
} from "./hello.ts";
import type { SessionConfig } from "./session_options.ts";
import type { ByteChannel } from "./transport.ts";

/** Bytes in a RESULT record. */
export const RESULT_BYTES = 36;

/** RESULT status values. */
export const ResultStatus = { OK: 0, AUTH_FAILED: 2 } as const;

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

/**
 * Runs the client side of the handshake (`docs/PROTOCOL.md`, "Handshake"): sends HELLO,
 * checks the server's, proves the key, checks the server's proof. Closes the channel on
 * failure.
 *
 * @throws {PresyncError} `AUTH_FAILED`, `PROTOCOL_VERSION`, `PROTOCOL_VIOLATION`,
 *   `CONNECTION_LOST` or `TIMEOUT`
 */
export function clientHandshake(
  channel: ByteChannel,
  config: SessionConfig,
): Promise<HandshakeResult> {
  return withDeadline(channel, config, async (reader, writer) => {
    const hello = encodeHello(localHello(config, HelloRole.CLIENT));
    await write(writer, hello);
    const serverHelloBytes = await reader.read(HELLO_BYTES, "server HELLO");
    const peer = decodeHello(serverHelloBytes, HelloRole.SERVER);
    if (peer.status === HelloStatus.VERSION_UNSUPPORTED || peer.version !== PROTOCOL_VERSION) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VERSION,
        `server ${channel.remote} speaks session protocol version ${peer.version}, this ` +
          `client speaks ${PROTOCOL_VERSION}: run the same presync release on both sites`,
      );
    }
    const transcript = new AuthTranscript(config.psk, hello, serverHelloBytes);
    const proof = transcript.clientProof();
    await write(writer, proof);
    const result = await reader.read(RESULT_BYTES, "authentication RESULT");
    const status = new DataView(result.buffer).getUint32(0, true);
    if (status === ResultStatus.AUTH_FAILED) {
      throw new PresyncError(
        ErrorCode.AUTH_FAILED,
        `server ${channel.remote} rejected this agent's pre-shared key: check that both sites ` +
          `use the same key file`,
      );
    }
    if (status !== ResultStatus.OK) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `expected RESULT status 0 or 2 from ${channel.remote}: received ${status}`,
      );
    }
    if (!constantTimeEqual(result.subarray(4), transcript.serverProof(proof))) {
      throw new PresyncError(
        ErrorCode.AUTH_FAILED,
        `server ${channel.remote} could not prove it knows the pre-shared key: it is not the ` +
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
 * Runs the server side of the handshake. On every failure it logs one line naming the peer
 * and the cause, tells the client only what the protocol says (version or auth status), and
 * closes the channel.
 *
 * @throws {PresyncError} `AUTH_FAILED`, `PROTOCOL_VERSION`, `PROTOCOL_VIOLATION`,
 *   `CONNECTION_LOST` or `TIMEOUT`
 */
export async function serverHandshake(
  channel: ByteChannel,
  config: SessionConfig,
): Promise<HandshakeResult> {
  try {
    return await withDeadline(channel, config, async (reader, writer) => {
      const clientHelloBytes = await reader.read(HELLO_BYTES, "client HELLO");
      const peer = decodeHello(clientHelloBytes, HelloRole.CLIENT);
      if (peer.version !== PROTOCOL_VERSION) {
        const refusal = localHello(config, HelloRole.SERVER, HelloStatus.VERSION_UNSUPPORTED);
        await write(writer, encodeHello(refusal)).catch(() => {});
        throw new PresyncError(
          ErrorCode.PROTOCOL_VERSION,
          `client speaks session protocol version ${peer.version}, this server speaks ` +
            `${PROTOCOL_VERSION}`,
        );
      }
      const hello = encodeHello(localHello(config, HelloRole.SERVER));
      await write(writer, hello);
      const transcript = new AuthTranscript(config.psk, clientHelloBytes, hello);
      const proof = await reader.read(PROOF_BYTES, "client PROOF");
      const result = new Uint8Array(RESULT_BYTES);
      if (!constantTimeEqual(proof, transcript.clientProof())) {
        new DataView(result.buffer).setUint32(0, ResultStatus.AUTH_FAILED, true);
        await write(writer, result).catch(() => {});
        throw new PresyncError(
          ErrorCode.AUTH_FAILED,
          "client proof does not verify: wrong pre-shared key, or a replayed handshake",
        );
      }
      result.set(transcript.serverProof(proof), 4);
      await write(writer, result);
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
    config.logger({
      level: "warn",
      event: code === ErrorCode.AUTH_FAILED ? "auth_failed" : "handshake_failed",
      remote: channel.remote,
      message: `rejected connection from ${channel.remote} (${code}): ` +
        (error instanceof Error ? error.message : String(error)),
    });
    throw error;
  }
}
