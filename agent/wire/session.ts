import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { frameBytes, GOAWAY_REASON_FOR, u32 } from "./_frame_bytes.ts";
import { Signal } from "./_signal.ts";
import {
  FrameFlag,
  FrameType,
  GoAwayReason,
  type Priority,
  ResetCode,
  sealFrame,
} from "./frame.ts";
import { FrameDecoder } from "./frame_decoder.ts";
import { FrameDispatcher } from "./frame_dispatcher.ts";
import { clientHandshake, type HandshakeResult, serverHandshake } from "./handshake.ts";
import { keepaliveAction } from "./keepalive.ts";
import { PingTracker } from "./ping_tracker.ts";
import { ReceiveWindow } from "./receive_window.ts";
import { MIN_WINDOW_BYTES } from "./hello.ts";
import { FrameScheduler, type QueuedFrame } from "./scheduler.ts";
import {
  resolveSessionConfig,
  type SessionConfig,
  type SessionOptions,
} from "./session_options.ts";
import type { SessionStats } from "./session_stats.ts";
import { SessionStream, type StreamHost } from "./session_stream.ts";
import { StreamTable } from "./stream_table.ts";
import { STRIPE_JOIN_MAGIC } from "./stripe_record.ts";
import type { ByteChannel } from "./transport.ts";

/**
 * An authenticated, multiplexed session between two agents over one {@linkcode ByteChannel}
 * (`docs/PROTOCOL.md`, "Session layer"). Open one with {@linkcode Session.connect} (client)
 * or {@linkcode Session.accept} (server); then open and accept prioritized streams, measure
 * RTT with `ping()`, and end with `close()`.
 *
 * @example
 * ```ts ignore
 * const session = await Session.connect(channel, { psk });
 * const stream = session.openStream(Priority.CONTROL);
 * console.log(await session.ping(), "ms");
 * await session.close();
 * ```
 */
export class Session implements StreamHost {
  /** True on the side that connected. */
  readonly isClient: boolean;
  /** The peer's address. */
  readonly remote: string;
  /** Resolves when the session ended cleanly; rejects with the `PresyncError` that ended it. */
  readonly closed: Promise<void>;

  readonly #config: SessionConfig;
  readonly #channel: ByteChannel;
  readonly #hs: HandshakeResult;
  readonly #decoder: FrameDecoder;
  readonly #scheduler = new FrameScheduler();
  readonly #writeSignal = new Signal();
  readonly #streams: StreamTable;
  readonly #dispatcher: FrameDispatcher;
  readonly #accepted: SessionStream[] = [];
  readonly #acceptSignal = new Signal();
  readonly #connWindow: ReceiveWindow;
  readonly #pings = new PingTracker();
  readonly #timer: ReturnType<typeof setInterval>;
  #connSendCredit: number;
  #sendSeq = 0;
  /** Settles once the write in flight (and its bookkeeping) is done. */
  #writing: Promise<void> = Promise.resolve();
  #lastReceived = performance.now();
  /** The first bytes after the handshake, to tell a striped peer from a broken one. */
  #firstBytes: Uint8Array | undefined;
  #lastPingSent = 0;
  #goAwaySent = false;
  #goAwayReceived = false;
  #ending = false;
  #done = false;
  #error: PresyncError | undefined;
  #settle!: (error?: PresyncError) => void;
  #stats: SessionStats = {
    framesSent: [0, 0, 0, 0],
    framesReceived: [0, 0, 0, 0],
    framesQueued: [0, 0, 0, 0],
    bytesSent: 0,
    bytesReceived: 0,
    openStreams: 0,
    rttMs: undefined,
  };

  private constructor(
    channel: ByteChannel,
    config: SessionConfig,
    hs: HandshakeResult,
    client: boolean,
  ) {
    this.isClient = client;
    this.remote = channel.remote;
    this.#channel = channel;
    this.#config = config;
    this.#hs = hs;
    this.#streams = new StreamTable(client, channel.remote);
    this.#connSendCredit = hs.peer.connectionWindow;
    this.#connWindow = new ReceiveWindow(config.connectionWindowBytes);
    this.#decoder = new FrameDecoder({
      maxFramePayload: config.maxFramePayload,
      tagKey: hs.receiveKey,
    });
    this.#dispatcher = this.#newDispatcher();
    const closed = new Promise<void>((resolve, reject) => {
      this.#settle = (error) => error ? reject(error) : resolve();
    });
    closed.catch(() => {}); // observed through `closed`; never an unhandled rejection
    this.closed = closed;
    const tick = Math.max(5, Math.min(config.keepaliveIntervalMs, config.idleTimeoutMs) / 4);
    this.#timer = setInterval(() => this.#keepalive(), tick);
    this.#readLoop(hs.leftover);
    this.#writeLoop();
  }

  /**
   * Authenticates as the client over `channel`, tells the channel (`authenticated()`), and
   * starts the session.
   *
   * @throws {PresyncError} see {@linkcode clientHandshake}; `INVALID_ARGUMENT` for bad options;
   *   what the channel's `authenticated()` rejects with
   */
  static async connect(channel: ByteChannel, options: SessionOptions): Promise<Session> {
    const config = resolveSessionConfig(options);
    const hs = await clientHandshake(channel, config);
    try {
      await channel.authenticated?.();
    } catch (error) {
      channel.close();
      throw error;
    }
    return new Session(channel, config, hs, true);
  }

  /**
   * Authenticates a connecting client over `channel` and starts the session; a failed
   * handshake is logged (with the peer's address) and closes the channel.
   *
   * @throws {PresyncError} see {@linkcode serverHandshake}
   */
  static async accept(channel: ByteChannel, options: SessionOptions): Promise<Session> {
    const config = resolveSessionConfig(options);
    const hs = await serverHandshake(channel, config);
    return new Session(channel, config, hs, false);
  }

  /** The receive window granted per stream by default, bytes (the largest a stream gets). */
  get streamWindowBytes(): number {
    return this.#config.streamWindowBytes;
  }

  /** Smoothed round-trip time in ms, or undefined before the first PONG. */
  get rttMs(): number | undefined {
    return this.#pings.srttMs;
  }

  /** A snapshot of the session's counters. */
  stats(): SessionStats {
    const s = this.#stats;
    return {
      ...s,
      framesSent: [...s.framesSent],
      framesReceived: [...s.framesReceived],
      framesQueued: [0, 1, 2, 3].map((p) => this.#scheduler.queuedFrames(p as Priority)) as [
        number,
        number,
        number,
        number,
      ],
      openStreams: this.#streams.size,
      rttMs: this.#pings.srttMs,
    };
  }

  /**
   * Opens a stream with `priority` (0 control, 1 on-demand, 2 bulk, 3 memory). Not idempotent: each
   * call opens a new stream.
   *
   * @throws {PresyncError} `GOING_AWAY` after a GOAWAY either way, the session's error when
   *   it failed, `SESSION_CLOSED` after `close()`
   */
  openStream(priority: Priority): SessionStream {
    this.#checkOpen();
    if (this.#goAwayReceived || this.#goAwaySent) {
      throw new PresyncError(
        ErrorCode.GOING_AWAY,
        `cannot open a stream to ${this.remote}: the session is going away; open a new session`,
        { retryable: true },
      );
    }
    if (priority !== 0 && priority !== 1 && priority !== 2 && priority !== 3) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `priority must be 0, 1, 2 or 3: received ${priority}`,
      );
    }
    const id = this.#streams.allocateLocalId();
    const stream = this.#newStream(id, priority);
    // OPENs travel in the session class: in id order, and ahead of the stream's first DATA.
    this.#sendSession(FrameType.OPEN, 0, id, new Uint8Array([priority]));
    return stream;
  }

  /**
   * Waits for the peer to open a stream. Resolves with null once the peer sent GOAWAY or the
   * session closed cleanly.
   *
   * @throws {PresyncError} the error that ended the session
   */
  async acceptStream(): Promise<SessionStream | null> {
    while (true) {
      const next = this.#accepted.shift();
      if (next) return next;
      if (this.#error) throw this.#error;
      if (this.#ending || this.#goAwayReceived) return null;
      await this.#acceptSignal.wait();
    }
  }

  /**
   * Measures one round trip with PING/PONG, in ms, and folds it into `rttMs`.
   *
   * @throws {PresyncError} the session's error if it ends first
   */
  ping(): Promise<number> {
    this.#checkOpen();
    return new Promise((resolve, reject) => {
      const id = this.#pings.start(performance.now(), resolve);
      this.closed.then(() => reject(this.#closedError()), reject);
      this.#sendPing(id, 0);
    });
  }

  /**
   * Ends the session cleanly: sends GOAWAY, lets queued frames drain, closes the transport.
   * Streams still open fail with `SESSION_CLOSED`. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.#ending) {
      this.#goAway(GoAwayReason.NORMAL);
      this.#ending = true;
      this.#writeSignal.notify();
      this.#acceptSignal.notify();
    }
    await this.closed.catch(() => {});
  }

  /** Ends the session at once without GOAWAY (as a cut link would). Idempotent. */
  abort(reason = "aborted locally"): void {
    this.#fail(new PresyncError(ErrorCode.SESSION_CLOSED, `session ${reason}`));
  }

  #closedError(): PresyncError {
    return this.#error ??
      new PresyncError(ErrorCode.SESSION_CLOSED, `the session with ${this.remote} is closed`);
  }

  #checkOpen(): void {
    if (this.#error) throw this.#error;
    if (this.#ending) throw this.#closedError();
  }

  #newStream(id: number, priority: Priority): SessionStream {
    const stream = new SessionStream(
      this,
      id,
      priority,
      this.#hs.peer.streamWindow,
      this.#config.streamWindowBytes,
    );
    this.#streams.add(stream);
    return stream;
  }

  /** The receive side, acting on this session's state (`frame_dispatcher.ts`). */
  #newDispatcher(): FrameDispatcher {
    return new FrameDispatcher({
      remote: this.remote,
      streams: this.#streams,
      pings: this.#pings,
      connWindow: this.#connWindow,
      framesReceived: this.#stats.framesReceived,
      maxStreams: this.#config.maxStreams,
      refusesStreams: () => this.#goAwaySent || this.#ending,
      acceptPeerStream: (id, priority) => {
        this.#accepted.push(this.#newStream(id, priority));
        this.#acceptSignal.notify();
      },
      sendSession: (type, flags, streamId, payload) =>
        this.#sendSession(type, flags, streamId, payload),
      creditConnection: (n) => this.#creditConnection(n),
      dropStream: (stream, error) => this.#dropStream(stream, error),
      addConnectionCredit: (n) => {
        this.#connSendCredit += n;
        for (const stream of this.#streams.values()) stream.signal.notify();
      },
      maybeForget: (stream) => this.#maybeForget(stream),
      goAwayReceived: () => {
        this.#goAwayReceived = true;
        this.#acceptSignal.notify();
      },
    });
  }

  // ---- StreamHost -------------------------------------------------------------------------

  /** @internal */
  async writeData(stream: SessionStream, chunk: Uint8Array): Promise<void> {
    const frameMax = Math.min(this.#config.dataFrameBytes, this.#hs.peer.maxFramePayload);
    let offset = 0;
    while (offset < chunk.length) {
      this.#checkStream(stream);
      const room = this.#scheduler.queuedBytes(stream.id) < this.#config.maxQueuedBytesPerStream;
      const n = Math.min(chunk.length - offset, frameMax, stream.sendCredit, this.#connSendCredit);
      if (!room || n <= 0) {
        await stream.signal.wait();
        continue;
      }
      stream.sendCredit -= n;
      this.#connSendCredit -= n;
      const bytes = frameBytes(FrameType.DATA, 0, stream.id, chunk.subarray(offset, offset + n));
      this.#scheduler.enqueue(stream.id, stream.priority, { bytes, dataBytes: n });
      offset += n;
      this.#writeSignal.notify();
    }
  }

  /** @internal */
  finish(stream: SessionStream): Promise<void> {
    this.#checkStream(stream);
    stream.sentFin = true;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    stream.onFailed = reject;
    promise.catch(() => {}); // the writable reports it; never an unhandled rejection
    this.#scheduler.enqueue(stream.id, stream.priority, {
      bytes: frameBytes(FrameType.DATA, FrameFlag.FIN, stream.id, new Uint8Array(0)),
      dataBytes: 0,
      onSent: resolve,
    });
    this.#writeSignal.notify();
    this.#maybeForget(stream);
    return promise;
  }

  /** @internal */
  reset(stream: SessionStream, reason: unknown): void {
    if (stream.error) return;
    this.#dropStream(
      stream,
      new PresyncError(ErrorCode.STREAM_RESET, `stream ${stream.id} was reset locally: ${reason}`),
    );
    if (!this.#error && !this.#ending) {
      this.#sendSession(FrameType.RESET, 0, stream.id, u32(ResetCode.CANCELLED));
    }
  }

  /** @internal */
  resizeReceiveWindow(stream: SessionStream, bytes: number): void {
    assertInteger("receive window", bytes, MIN_WINDOW_BYTES, this.#config.streamWindowBytes);
    if (!this.#streams.has(stream.id) || stream.receivedFin) return;
    const increment = stream.receiveWindow.resize(bytes);
    if (increment > 0) this.#sendSession(FrameType.WINDOW, 0, stream.id, u32(increment));
  }

  /** @internal */
  consumed(stream: SessionStream, n: number): void {
    this.#creditConnection(n);
    if (!this.#streams.has(stream.id) || stream.receivedFin) return;
    const increment = stream.receiveWindow.consume(n);
    if (increment > 0) this.#sendSession(FrameType.WINDOW, 0, stream.id, u32(increment));
  }

  #creditConnection(n: number): void {
    const increment = this.#connWindow.consume(n);
    if (increment > 0 && !this.#done) this.#sendSession(FrameType.WINDOW, 0, 0, u32(increment));
  }

  #checkStream(stream: SessionStream): void {
    if (stream.error) throw stream.error;
    if (this.#error) throw this.#error;
    if (stream.sentFin) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, `stream ${stream.id} is already closed`);
    }
  }

  /** Fails a stream locally, drops its queued frames and returns their credit. */
  #dropStream(stream: SessionStream, error: PresyncError): void {
    const discarded = stream.fail(error);
    if (discarded > 0) this.consumed(stream, discarded);
    for (const item of this.#scheduler.drop(stream.id, stream.priority)) {
      this.#connSendCredit += item.dataBytes;
    }
    this.#streams.delete(stream.id);
  }

  #maybeForget(stream: SessionStream): void {
    if (stream.sentFin && stream.receivedFin) this.#streams.delete(stream.id);
  }

  // ---- sending ----------------------------------------------------------------------------

  #sendSession(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    this.#scheduler.enqueueSession({
      bytes: frameBytes(type, flags, streamId, payload),
      dataBytes: 0,
    });
    this.#writeSignal.notify();
  }

  #sendPing(id: bigint, flags: number): void {
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setBigUint64(0, id, true);
    this.#sendSession(FrameType.PING, flags, 0, payload);
  }

  #goAway(reason: number): void {
    if (this.#goAwaySent) return;
    this.#goAwaySent = true;
    this.#sendSession(FrameType.GOAWAY, 0, 0, u32(reason));
  }

  async #writeLoop(): Promise<void> {
    const writer = this.#hs.writer;
    while (!this.#done) {
      const item: QueuedFrame | undefined = this.#scheduler.next();
      if (item === undefined) {
        if (this.#ending) break;
        await this.#writeSignal.wait();
        continue;
      }
      sealFrame(item.bytes, this.#hs.sendKey, this.#sendSeq++);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#writing = promise;
      try {
        await writer.write(item.bytes);
      } catch (error) {
        resolve();
        this.#fail(this.#lost(`writing to ${this.remote} failed: ${error}`, error));
        return;
      }
      this.#stats.bytesSent += item.bytes.length;
      this.#sent(item);
      resolve();
    }
    this.#finishClean();
  }

  /**
   * Ends the session cleanly from the read side (the peer said GOAWAY and closed), once the
   * write in flight, if any, settled: a stream whose FIN was just written finishes, instead of
   * failing because the read side saw the end first.
   */
  async #finishAfterWrite(): Promise<void> {
    await this.#writing;
    if (this.#done) return;
    this.#failOpenStreams(this.#lost(`${this.remote} closed the session with streams open`));
    this.#finishClean();
  }

  #sent(item: QueuedFrame): void {
    const stream = this.#streams.get(new DataView(item.bytes.buffer).getUint32(2, true));
    if (item.bytes[0] === FrameType.DATA && stream) {
      this.#stats.framesSent[stream.priority]++;
      stream.signal.notify();
    }
    item.onSent?.();
  }

  #finishClean(): void {
    if (this.#done) return;
    this.#done = true;
    const error = this.#closedError();
    for (const stream of this.#streams.values()) stream.fail(error);
    this.#streams.clear();
    this.#teardown();
    this.#settle();
  }

  #teardown(): void {
    clearInterval(this.#timer);
    this.#channel.close();
    this.#acceptSignal.notify();
    this.#writeSignal.notify();
  }

  #lost(message: string, cause?: unknown): PresyncError {
    return new PresyncError(ErrorCode.CONNECTION_LOST, message, { cause, retryable: true });
  }

  #fail(error: PresyncError): void {
    if (this.#error || this.#done) return;
    this.#done = true;
    this.#error = error;
    const reason = GOAWAY_REASON_FOR[error.code];
    if (reason !== undefined && !this.#goAwaySent) {
      // Best effort: tell the peer why, without waiting behind queued frames.
      this.#goAwaySent = true;
      const bytes = frameBytes(FrameType.GOAWAY, 0, 0, u32(reason));
      sealFrame(bytes, this.#hs.sendKey, this.#sendSeq++);
      this.#hs.writer.write(bytes).catch(() => {});
    }
    for (const stream of this.#streams.values()) stream.fail(error);
    this.#streams.clear();
    this.#teardown();
    this.#settle(error);
  }

  // ---- receiving --------------------------------------------------------------------------

  #keepalive(): void {
    const now = performance.now();
    const action = keepaliveAction(now, this.#lastReceived, this.#lastPingSent, this.#config);
    if (action === "dead") {
      const silent = Math.round(now - this.#lastReceived);
      this.#config.logger({
        level: "warn",
        event: "link_dead",
        remote: this.remote,
        message: `nothing received from ${this.remote} for ${silent} ms ` +
          `(idle timeout ${this.#config.idleTimeoutMs} ms): closing the session`,
      });
      this.#fail(
        new PresyncError(
          ErrorCode.LINK_DEAD,
          `nothing received from ${this.remote} for ${silent} ms (idle timeout ` +
            `${this.#config.idleTimeoutMs} ms): the link is down or blackholed; reconnect`,
          { retryable: true },
        ),
      );
    } else if (action === "ping") {
      this.#lastPingSent = now;
      this.#sendPing(this.#pings.nextId(), 0);
    }
  }

  async #readLoop(leftover: Uint8Array): Promise<void> {
    const reader = this.#hs.reader;
    let chunk: Uint8Array | undefined = leftover;
    try {
      while (!this.#done) {
        if (chunk === undefined) {
          const result = await reader.read();
          if (result.done) break;
          chunk = result.value;
        }
        if (this.#done) return;
        this.#lastReceived = performance.now();
        this.#stats.bytesReceived += chunk.length;
        this.#firstBytes ??= chunk.length > 0
          ? chunk.slice(0, STRIPE_JOIN_MAGIC.length)
          : undefined;
        for (const frame of this.#decoder.push(chunk)) this.#dispatcher.handle(frame);
        chunk = undefined;
      }
    } catch (error) {
      if (this.#done) return;
      const transportError = !(error instanceof PresyncError) ||
        error.code === ErrorCode.CONNECTION_LOST;
      if (transportError && (this.#goAwayReceived || this.#ending)) {
        // After GOAWAY a transport error (TLS without close_notify, a reset, a lost stripe
        // member) is the end.
        await this.#finishAfterWrite();
        return;
      }
      if (error instanceof PresyncError && error.code !== ErrorCode.CONNECTION_LOST) {
        this.#config.logger({
          level: "error",
          event: "protocol_error",
          remote: this.remote,
          message: `closing the session with ${this.remote}: ${error.message}${this.#stripeHint()}`,
        });
        this.#fail(error);
      } else {
        this.#fail(this.#lost(`connection to ${this.remote} failed: ${error}`, error));
      }
      return;
    }
    if (this.#done) return;
    if (this.#goAwayReceived || this.#ending) {
      // The peer said GOAWAY and closed: nothing more can be sent; end cleanly.
      this.#ending = true;
      await this.#finishAfterWrite();
    } else {
      this.#fail(this.#lost(`${this.remote} closed the connection without GOAWAY`));
    }
  }

  /** A hint when the peer's first bytes are a stripe JOIN: it stripes and we do not. */
  #stripeHint(): string {
    const first = this.#firstBytes;
    const join = first?.length === STRIPE_JOIN_MAGIC.length &&
      STRIPE_JOIN_MAGIC.every((b, i) => first[i] === b);
    return join
      ? ` (the peer sent a stripe JOIN: it stripes its connections, as agent --stripes N does; ` +
        `start serve with --striped, or the agent without --stripes)`
      : "";
  }

  #failOpenStreams(error: PresyncError): void {
    for (const stream of this.#streams.values()) {
      if (!stream.receivedFin) stream.fail(error);
    }
    this.#acceptSignal.notify();
  }
}
