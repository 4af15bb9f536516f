import type { PerPriority } from "./session_stats.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { u32 } from "./_frame_bytes.ts";
import { type Frame, FrameFlag, FrameType, type Priority, ResetCode } from "./frame.ts";
import { readU32 } from "./frame_decoder.ts";
import type { PingTracker } from "./ping_tracker.ts";
import type { ReceiveWindow } from "./receive_window.ts";
import type { SessionStream } from "./session_stream.ts";
import type { StreamTable } from "./stream_table.ts";

/** What the receive side needs from its session (implemented by the session; not public API). */
export interface DispatchHost {
  /** The peer's address, for messages. */
  readonly remote: string;
  /** The session's open streams and id rules. */
  readonly streams: StreamTable;
  /** PINGs in flight and the smoothed RTT. */
  readonly pings: PingTracker;
  /** The connection's receive window. */
  readonly connWindow: ReceiveWindow;
  /** Frames received per priority class (the session's stats, counted in place). */
  readonly framesReceived: PerPriority;
  /** Streams the peer may have open at once. */
  readonly maxStreams: number;
  /** True once this side sent GOAWAY or is closing: new OPENs are refused. */
  refusesStreams(): boolean;
  /** Makes stream `id` opened by the peer and queues it for `acceptStream()`. */
  acceptPeerStream(id: number, priority: Priority): void;
  /** Queues a session-class frame. */
  sendSession(type: number, flags: number, streamId: number, payload: Uint8Array): void;
  /** `n` received DATA bytes were discarded: credit the connection window. */
  creditConnection(n: number): void;
  /** Fails a stream locally, drops its queued frames and returns their credit. */
  dropStream(stream: SessionStream, error: PresyncError): void;
  /** The peer granted `n` more bytes on the whole connection. */
  addConnectionCredit(n: number): void;
  /** Forgets a stream once FIN went both ways. */
  maybeForget(stream: SessionStream): void;
  /** The peer sent GOAWAY. */
  goAwayReceived(): void;
}

/**
 * The receive side of a session: applies each decoded, validated frame to the session's
 * state (`docs/PROTOCOL.md`, "Frame types"): opens or refuses streams, delivers DATA within
 * the windows, applies RESET and WINDOW, answers PINGs and records PONGs, notes GOAWAY.
 * No I/O: replies go through {@linkcode DispatchHost.sendSession}.
 *
 * @example
 * ```ts ignore
 * const dispatcher = new FrameDispatcher(host);
 * for (const frame of decoder.push(chunk)) dispatcher.handle(frame);
 * ```
 */
export class FrameDispatcher {
  readonly #host: DispatchHost;

  /** A dispatcher acting on `host`. */
  constructor(host: DispatchHost) {
    this.#host = host;
  }

  /**
   * Applies one frame.
   *
   * @throws {PresyncError} `PROTOCOL_VIOLATION` (stream-id rules, DATA after FIN) or
   *   `FLOW_CONTROL` (DATA beyond a window); either ends the session
   */
  handle(frame: Frame): void {
    switch (frame.type) {
      case FrameType.OPEN:
        return this.#onOpen(frame);
      case FrameType.DATA:
        return this.#onData(frame);
      case FrameType.RESET:
        return this.#onReset(frame);
      case FrameType.WINDOW:
        return this.#onWindow(frame);
      case FrameType.PING:
        return this.#onPing(frame);
      case FrameType.GOAWAY:
        return this.#host.goAwayReceived();
    }
  }

  #onOpen(frame: Frame): void {
    const host = this.#host;
    const id = frame.streamId;
    host.streams.checkPeerOpen(id);
    if (host.refusesStreams() || host.streams.peerOpenCount() >= host.maxStreams) {
      host.sendSession(FrameType.RESET, 0, id, u32(ResetCode.REFUSED));
      return;
    }
    host.acceptPeerStream(id, frame.payload[0] as Priority);
  }

  #onData(frame: Frame): void {
    const host = this.#host;
    const stream = host.streams.lookup(frame.streamId);
    const n = frame.payload.length;
    host.connWindow.receive(n, "the connection");
    if (stream === undefined || stream.error) {
      host.creditConnection(n); // discarded: credit it back
      return;
    }
    if (stream.receivedFin) {
      throw host.streams.violation(`sent DATA on stream ${stream.id} after FIN`);
    }
    stream.receiveWindow.receive(n, `stream ${stream.id}`);
    host.framesReceived[stream.priority]++;
    if ((frame.flags & FrameFlag.FIN) !== 0) stream.receivedFin = true;
    stream.deliver(frame.payload);
    host.maybeForget(stream);
  }

  #onReset(frame: Frame): void {
    const stream = this.#host.streams.lookup(frame.streamId);
    if (stream === undefined || stream.error) return;
    const code = readU32(frame.payload);
    const why = code === ResetCode.REFUSED
      ? "refused it (too many streams, or going away)"
      : `reset it (code ${code})`;
    this.#host.dropStream(
      stream,
      new PresyncError(ErrorCode.STREAM_RESET, `${this.#host.remote} ${why}: stream ${stream.id}`, {
        retryable: code === ResetCode.REFUSED,
      }),
    );
  }

  #onWindow(frame: Frame): void {
    const increment = readU32(frame.payload);
    if (frame.streamId === 0) {
      this.#host.addConnectionCredit(increment);
      return;
    }
    const stream = this.#host.streams.lookup(frame.streamId);
    if (stream === undefined) return;
    stream.sendCredit += increment;
    stream.signal.notify();
  }

  #onPing(frame: Frame): void {
    const id = new DataView(frame.payload.buffer, frame.payload.byteOffset).getBigUint64(0, true);
    if ((frame.flags & FrameFlag.ACK) === 0) {
      this.#host.sendSession(FrameType.PING, FrameFlag.ACK, 0, frame.payload.slice());
      return;
    }
    this.#host.pings.ack(id, performance.now());
  }
}
