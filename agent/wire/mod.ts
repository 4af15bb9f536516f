/**
 * The session layer: authenticated, multiplexed, prioritized, flow-controlled streams between
 * two agents over any reliable byte stream (`docs/PROTOCOL.md`, "Session layer").
 *
 * Glossary:
 * - **channel**: a reliable ordered byte stream a session runs over ({@linkcode ByteChannel}),
 *   made by a **transport** plugin (`plugins/transport-tcp`, `plugins/transport-tls`) or in
 *   memory for tests ({@linkcode memoryChannelPair}).
 * - **handshake**: HELLO both ways (version, limits, fresh nonces), then a PROOF from the
 *   client and a RESULT from the server: each proves it holds the **pre-shared key** (PSK)
 *   with keyed BLAKE3 over both HELLOs. Every handshake record ends with an unkeyed
 *   **checksum**, so a damaged record (`HANDSHAKE_CORRUPT`, retried) is told apart from a
 *   wrong key (`AUTH_FAILED`, fatal).
 * - **session**: one authenticated connection between two agents ({@linkcode Session}).
 * - **stream**: an ordered byte stream in each direction inside a session, with a
 *   **priority** fixed at open: control (0) > on-demand (1) > bulk (2)
 *   ({@linkcode SessionStream}).
 * - **frame**: the unit on the wire: an 18-byte header (type, flags, stream id, length,
 *   integrity **tag**) and a payload ({@linkcode Frame}).
 * - **window**: how many more DATA bytes a sender may send on a stream or on the whole
 *   connection before the receiver grants more with a WINDOW frame.
 * - **keepalive**: PINGs after silence; a link silent for the idle timeout is **dead**.
 * - **GOAWAY**: "I open and accept no more streams"; the clean end of a session.
 * - **pre-auth**: a connection that has not finished the handshake yet. A server admits only
 *   so many at once, in total and per source address ({@linkcode PreauthGate}, after
 *   OpenSSH's `MaxStartups`), closes each at a deadline, and rate-limits the log lines they
 *   cause ({@linkcode PreauthGuard}).
 * - **stripe**: one channel over N parallel **member** connections of one transport
 *   ({@linkcode stripedTransport}); each member proves the PSK and sends a **JOIN** naming its
 *   stripe; writes travel as sequence-numbered **chunks** reassembled in order. Losing one
 *   member loses the stripe (`CONNECTION_LOST`).
 *
 * @example
 * ```ts
 * import { memoryChannelPair, Priority, Session } from "./mod.ts";
 * const psk = new Uint8Array(32).fill(7);
 * const [a, b] = memoryChannelPair();
 * const quiet = () => {};
 * const [client, server] = await Promise.all([
 *   Session.connect(a, { psk, logger: quiet }),
 *   Session.accept(b, { psk, logger: quiet }),
 * ]);
 * const out = client.openStream(Priority.CONTROL);
 * const writer = out.writable.getWriter();
 * await writer.write(new TextEncoder().encode("hello"));
 * await writer.close();
 * const incoming = await server.acceptStream();
 * const { value } = await incoming!.readable.getReader().read();
 * console.assert(new TextDecoder().decode(value) === "hello");
 * await client.close();
 * await server.closed;
 * ```
 *
 * @module
 */

export { AuthTranscript, checkPsk, PROOF_BYTES, PSK_BYTES } from "./auth_proof.ts";
export { ChunkReader } from "./_chunk_reader.ts";
export { constantTimeEqual } from "../bytes.ts";
export {
  encodeFrame,
  type Frame,
  FRAME_HEADER_BYTES,
  FRAME_TAG_BYTES,
  FrameFlag,
  FrameType,
  GoAwayReason,
  MAX_FRAME_PAYLOAD_LIMIT,
  MIN_FRAME_PAYLOAD_LIMIT,
  Priority,
  ResetCode,
  sealFrame,
  verifyFrameTag,
} from "./frame.ts";
export { FrameDecoder, type FrameDecoderOptions, validateFrame } from "./frame_decoder.ts";
export {
  clientHandshake,
  type HandshakeResult,
  PROOF_RECORD_BYTES,
  RESULT_BYTES,
  ResultStatus,
  serverHandshake,
} from "./handshake.ts";
export {
  decodeHello,
  decodeHelloPrefix,
  encodeHello,
  type Hello,
  HELLO_BYTES,
  HELLO_MAGIC,
  HELLO_PREFIX_BYTES,
  type HelloPrefix,
  HelloRole,
  HelloStatus,
  PROTOCOL_VERSION,
  V1_HELLO_BYTES,
} from "./hello.ts";
export { memoryChannelPair } from "./memory_channel.ts";
export { ReceiveWindow } from "./receive_window.ts";
export { FrameScheduler, type QueuedFrame } from "./scheduler.ts";
export { Session } from "./session.ts";
export type { SessionStats } from "./session_stats.ts";
export { type SessionLogEntry, type SessionLogger, stderrJsonLogger } from "./session_logger.ts";
export {
  checkSessionOptions,
  defaultSessionConfig,
  resolveSessionConfig,
  type SessionConfig,
  type SessionOptions,
} from "./session_options.ts";
export { SessionStream } from "./session_stream.ts";
export type { ByteChannel, Transport, TransportAddress, TransportListener } from "./transport.ts";
export { connChannel } from "./conn_channel.ts";
export { FrameDispatcher } from "./frame_dispatcher.ts";
export { type KeepaliveAction, keepaliveAction } from "./keepalive.ts";
export { PingTracker } from "./ping_tracker.ts";
export { LogThrottle, type ThrottleDecision } from "./log_throttle.ts";
export {
  type Admission,
  checkPreauthLimits,
  defaultPreauthLimits,
  PreauthGate,
  type PreauthLimits,
  type RefusalReason,
  sourceAddress,
} from "./preauth_gate.ts";
export { PreauthGuard, type PreauthGuardOptions, type PreauthSlot } from "./preauth_guard.ts";
export { StreamTable } from "./stream_table.ts";
export {
  decodeStripeChunkHeader,
  decodeStripeJoin,
  encodeStripeChunkHeader,
  encodeStripeJoin,
  STRIPE_CHUNK_HEADER_BYTES,
  STRIPE_JOIN_BYTES,
  STRIPE_MAX_CHUNK_BYTES,
  STRIPE_MAX_MEMBERS,
  type StripeChunkHeader,
  StripeChunkKind,
  type StripeJoin,
} from "./stripe_record.ts";
export { StripedChannel, type StripedChannelOptions } from "./striped_channel.ts";
export { stripedTransport, type StripedTransportOptions } from "./striped_transport.ts";
