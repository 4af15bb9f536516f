import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { checkPsk, PSK_BYTES } from "./auth_proof.ts";
import { MAX_FRAME_PAYLOAD_LIMIT, MIN_FRAME_PAYLOAD_LIMIT } from "./frame.ts";
import { MAX_WINDOW_BYTES, MIN_WINDOW_BYTES } from "./hello.ts";
import { type SessionLogger, stderrJsonLogger } from "./session_logger.ts";

/** What a session needs; everything but `psk` has a default ({@linkcode defaultSessionConfig}). */
export interface SessionOptions {
  /** The 32-byte pre-shared key both agents hold. */
  psk: Uint8Array;
  /** Largest frame payload this side accepts, in bytes (default 65,536). */
  maxFramePayload?: number;
  /** Size DATA frames are cut at, in bytes (default 16,384); bounds how long control waits. */
  dataFrameBytes?: number;
  /** Receive window granted per stream, in bytes (default 4 MiB). */
  streamWindowBytes?: number;
  /** Receive window granted for all streams together, in bytes (default 4 MiB ≈ 2 × the
   * bandwidth-delay product of 100 Mbit/s × 150 ms; it also bounds how much bulk can sit in
   * transport buffers ahead of a control frame). */
  connectionWindowBytes?: number;
  /** Bytes a stream may have queued for sending before its writer waits (default 64 KiB). */
  maxQueuedBytesPerStream?: number;
  /** Streams the peer may have open at once (default 1024). */
  maxStreams?: number;
  /** Silence after which a PING is sent, in ms (default 5,000). */
  keepaliveIntervalMs?: number;
  /** Silence after which the link is declared dead, in ms (default 15,000). */
  idleTimeoutMs?: number;
  /** Time allowed for the whole handshake, in ms (default 10,000). */
  handshakeTimeoutMs?: number;
  /** Where log lines go (default: JSON lines on stderr). */
  logger?: SessionLogger;
}

/** Session options with every default filled in and checked. */
export type SessionConfig = Required<SessionOptions>;

/** The defaults, with the given key. */
export function defaultSessionConfig(psk: Uint8Array): SessionConfig {
  return {
    psk,
    maxFramePayload: 65536,
    dataFrameBytes: 16384,
    streamWindowBytes: 4 << 20,
    connectionWindowBytes: 4 << 20,
    maxQueuedBytesPerStream: 65536,
    maxStreams: 1024,
    keepaliveIntervalMs: 5000,
    idleTimeoutMs: 15000,
    handshakeTimeoutMs: 10000,
    logger: stderrJsonLogger,
  };
}

/**
 * Fills in defaults and checks every key before anything starts.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the offending key
 */
export function resolveSessionConfig(options: SessionOptions): SessionConfig {
  checkPsk(options.psk);
  const defined = Object.fromEntries(
    Object.entries(options).filter(([, value]) => value !== undefined),
  );
  const config: SessionConfig = { ...defaultSessionConfig(options.psk), ...defined };
  assertInteger(
    "maxFramePayload",
    config.maxFramePayload,
    MIN_FRAME_PAYLOAD_LIMIT,
    MAX_FRAME_PAYLOAD_LIMIT,
  );
  assertInteger("dataFrameBytes", config.dataFrameBytes, 1, MAX_FRAME_PAYLOAD_LIMIT);
  assertInteger("streamWindowBytes", config.streamWindowBytes, MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
  assertInteger(
    "connectionWindowBytes",
    config.connectionWindowBytes,
    config.streamWindowBytes,
    MAX_WINDOW_BYTES,
  );
  assertInteger("maxQueuedBytesPerStream", config.maxQueuedBytesPerStream, 1, MAX_WINDOW_BYTES);
  assertInteger("maxStreams", config.maxStreams, 1, 1 << 20);
  assertInteger("keepaliveIntervalMs", config.keepaliveIntervalMs, 1, 3_600_000);
  assertInteger("idleTimeoutMs", config.idleTimeoutMs, config.keepaliveIntervalMs, 3_600_000);
  assertInteger("handshakeTimeoutMs", config.handshakeTimeoutMs, 1, 3_600_000);
  if (typeof config.logger !== "function") {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "logger must be a function");
  }
  return config;
}

/**
 * Checks every option but the key, so a daemon can refuse bad settings at startup with an
 * error naming the key, instead of refusing every session later.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the offending key
 */
export function checkSessionOptions(options: Omit<SessionOptions, "psk">): void {
  resolveSessionConfig({ ...options, psk: new Uint8Array(PSK_BYTES) });
}
