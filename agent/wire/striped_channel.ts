import { ErrorCode, PresyncError } from "../errors.ts";
import type { ChunkReader } from "./_chunk_reader.ts";
import { Signal } from "./_signal.ts";
import {
  decodeStripeChunkHeader,
  encodeStripeChunkHeader,
  STRIPE_CHUNK_HEADER_BYTES,
  STRIPE_MAX_CHUNK_BYTES,
  StripeChunkKind,
} from "./stripe_record.ts";
import type { ByteChannel } from "./transport.ts";

/** One authenticated member connection of a stripe, positioned after its JOIN. */
export interface StripeMember {
  /** The member's channel (closed with the stripe). */
  channel: ByteChannel;
  /** Reads the member's incoming bytes (holds what the handshake read ahead). */
  input: ChunkReader;
  /** Writes to the member. */
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Key of the chunk tags this side sends on this member. */
  sendKey: Uint8Array;
  /** Key of the chunk tags the peer sends on this member. */
  receiveKey: Uint8Array;
}

/** Tuning of a {@linkcode StripedChannel}. */
export interface StripedChannelOptions {
  /** Bytes queued per member before `write` waits (default 256 KiB). */
  memberQueueBytes?: number;
  /** Reassembled bytes buffered for the reader before members stop reading (default 256 KiB). */
  readBufferBytes?: number;
  /** How long `close()` lets queued bytes and END drain before cutting members, in ms (default 2,000). */
  lingerMs?: number;
}

interface Outgoing {
  readonly member: StripeMember;
  readonly index: number;
  queue: Uint8Array[];
  queuedBytes: number;
  counter: number;
  readonly wake: Signal;
  endQueued: boolean;
  writeDone: boolean;
  readDone: boolean;
  closed: boolean;
}

/**
 * One {@linkcode ByteChannel} over N authenticated member connections
 * (`docs/PROTOCOL.md`, "Striping"): writes are cut into sequence-numbered chunks of at most
 * 64 KiB, each sent on the member with the least queued bytes; the reader gets them back in
 * sequence order. Each member holds at most one chunk waiting for its turn, so reassembly
 * memory is bounded by N × 64 KiB plus `readBufferBytes`.
 *
 * Losing any member (a reset, or its end without an END chunk) fails the whole channel with
 * `CONNECTION_LOST`: chunks in flight on the lost member cannot be recovered, so the session
 * above ends and the caller reconnects all members. A blackholed member stalls reassembly,
 * which the session's keepalive reports as `LINK_DEAD`.
 *
 * Made by `stripedTransport` (`striped_transport.ts`), not directly.
 */
export class StripedChannel implements ByteChannel {
  /** Bytes from the peer, reassembled in order. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer; `write` resolves once the bytes are queued on a member. */
  readonly writable: WritableStream<Uint8Array>;
  /** The first member's peer address and the member count. */
  readonly remote: string;
  /** Resolves once every member connection is closed (after `close()` or a failure). */
  readonly done: Promise<void>;

  readonly #members: StripeMember[];
  readonly #out: Outgoing[];
  readonly #memberQueueBytes: number;
  readonly #lingerMs: number;
  readonly #room = new Signal();
  readonly #turn = new Signal();
  readonly #readRoom = new Signal();
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #sendSeq = 0;
  #rotate = 0;
  #nextSeq = 0;
  #endSeq: number | undefined;
  #ended = 0;
  #closing = false;
  #error: PresyncError | undefined;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #resolveDone!: () => void;

  /** @internal Made by `stripedTransport` once every member has joined. */
  constructor(members: StripeMember[], options: StripedChannelOptions = {}) {
    this.#members = members;
    this.#memberQueueBytes = options.memberQueueBytes ?? 262144;
    this.#lingerMs = options.lingerMs ?? 2000;
    this.remote = `${members[0].channel.remote} (stripe of ${members.length})`;
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
    this.#out = members.map((member, index) => ({
      member,
      index,
      queue: [],
      queuedBytes: 0,
      counter: 0,
      wake: new Signal(),
      endQueued: false,
      writeDone: false,
      readDone: false,
      closed: false,
    }));
    const readBufferBytes = options.readBufferBytes ?? 262144;
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#readRoom.notify(),
      cancel: () => this.close(),
    }, { highWaterMark: readBufferBytes, size: (chunk) => chunk.length });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      abort: () => this.close(),
    });
    for (const out of this.#out) this.#sendLoop(out);
    members.forEach((member, index) => this.#receiveLoop(member, index));
  }

  /**
   * Ends the channel for its user at once (reads end, writes fail). Bytes already queued,
   * then an END chunk, still drain to each member, which is then half-closed and read to its
   * end (so no unread data turns the close into a reset), for at most `lingerMs`; so a GOAWAY
   * written just before arrives. Idempotent.
   */
  close(): void {
    if (this.#closing || this.#error) return;
    this.#closing = true;
    try {
      this.#controller.close();
    } catch { /* already closed or errored */ }
    this.#linger = setTimeout(() => this.#closeMembers(), this.#lingerMs);
    for (const out of this.#out) {
      out.endQueued = true;
      out.wake.notify();
    }
    this.#wakeAll();
  }

  // ---- sending ----------------------------------------------------------------------------

  async #write(chunk: Uint8Array): Promise<void> {
    for (let offset = 0; offset < chunk.length;) {
      if (this.#error) throw this.#error;
      if (this.#closing) throw this.#closedError();
      const out = this.#pickMember();
      if (out === undefined) {
        await this.#room.wait();
        continue;
      }
      const n = Math.min(chunk.length - offset, STRIPE_MAX_CHUNK_BYTES);
      const header = encodeStripeChunkHeader(
        { kind: StripeChunkKind.DATA, length: n, seq: this.#sendSeq++ },
        out.member.sendKey,
        out.counter++,
      );
      const bytes = new Uint8Array(STRIPE_CHUNK_HEADER_BYTES + n);
      bytes.set(header);
      bytes.set(chunk.subarray(offset, offset + n), STRIPE_CHUNK_HEADER_BYTES);
      out.queue.push(bytes);
      out.queuedBytes += bytes.length;
      out.wake.notify();
      offset += n;
    }
  }

  /** The member with the least queued bytes that has room (ties: take turns), or undefined. */
  #pickMember(): Outgoing | undefined {
    let best: Outgoing | undefined;
    for (let i = 0; i < this.#out.length; i++) {
      const out = this.#out[(this.#rotate + i) % this.#out.length];
      if (out.queuedBytes >= this.#memberQueueBytes) continue;
      if (best === undefined || out.queuedBytes < best.queuedBytes) best = out;
    }
    if (best) this.#rotate = (best.index + 1) % this.#out.length;
    return best;
  }

  async #sendLoop(out: Outgoing): Promise<void> {
    const writer = out.member.writer;
    while (!this.#error) {
      const bytes = out.queue.shift();
      if (bytes === undefined) {
        if (out.endQueued) break;
        await out.wake.wait();
        continue;
      }
      try {
        await writer.write(bytes);
      } catch (error) {
        return this.#memberLost(out.index, `writing failed: ${error}`, error);
      }
      out.queuedBytes -= bytes.length;
      this.#room.notify();
    }
    if (this.#error) return;
    const end = encodeStripeChunkHeader(
      { kind: StripeChunkKind.END, length: 0, seq: this.#sendSeq },
      out.member.sendKey,
      out.counter++,
    );
    await writer.write(end).catch(() => {});
    await writer.close().catch(() => {});
    out.writeDone = true;
    this.#maybeRelease(out);
  }

  /** Closes a member once both directions are done; the stripe is done once all are. */
  #maybeRelease(out: Outgoing): void {
    if (out.closed || !out.writeDone || !out.readDone) return;
    out.closed = true;
    out.member.channel.close();
    if (this.#out.every((o) => o.closed)) this.#closeMembers();
  }

  // ---- receiving --------------------------------------------------------------------------

  async #receiveLoop(member: StripeMember, index: number): Promise<void> {
    await this.#receive(member, index);
    if (this.#closing && !this.#error) {
      // Read the member to its end (the peer closes after our END) so closing it sends no RST.
      await member.input.drain();
    }
    this.#out[index].readDone = true;
    this.#maybeRelease(this.#out[index]);
  }

  async #receive(member: StripeMember, index: number): Promise<void> {
    let counter = 0;
    let ended = false;
    try {
      while (!this.#error && !this.#closing) {
        const headerBytes = await member.input.read(STRIPE_CHUNK_HEADER_BYTES);
        if (this.#error || this.#closing) return;
        if (headerBytes === null) {
          if (ended) return;
          return this.#memberLost(index, "it closed without an END chunk (a cut link?)");
        }
        const header = decodeStripeChunkHeader(headerBytes, member.receiveKey, counter++);
        if (ended) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `stripe member ${index} sent a chunk after its END`,
          );
        }
        if (header.kind === StripeChunkKind.END) {
          ended = true;
          this.#onEnd(header.seq);
          continue; // the peer's end of input follows
        }
        const payload = await member.input.read(header.length);
        if (payload === null) return this.#memberLost(index, "it closed in the middle of a chunk");
        while (this.#nextSeq < header.seq && !this.#error && !this.#closing) {
          await this.#turn.wait();
        }
        if (this.#error || this.#closing) return;
        if (header.seq !== this.#nextSeq) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `stripe member ${index} sent chunk ${header.seq} again (expected ${this.#nextSeq})`,
          );
        }
        this.#controller.enqueue(payload);
        this.#nextSeq++;
        this.#turn.notify();
        while ((this.#controller.desiredSize ?? 0) <= 0 && !this.#error && !this.#closing) {
          await this.#readRoom.wait();
        }
      }
    } catch (error) {
      if (this.#error || this.#closing) return;
      if (error instanceof PresyncError && error.code !== ErrorCode.CONNECTION_LOST) {
        return this.#fail(error);
      }
      this.#memberLost(index, `reading failed: ${error}`, error);
    }
  }

  #onEnd(endSeq: number): void {
    if (this.#endSeq !== undefined && this.#endSeq !== endSeq) {
      return this.#fail(
        new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `stripe members disagree on the last chunk: ${this.#endSeq} and ${endSeq}`,
        ),
      );
    }
    this.#endSeq = endSeq;
    if (++this.#ended < this.#members.length) return;
    if (this.#nextSeq !== endSeq) {
      return this.#fail(
        new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `stripe ended after chunk ${this.#nextSeq} of ${endSeq}`,
        ),
      );
    }
    try {
      this.#controller.close(); // every member ended cleanly: the end of input
    } catch { /* already closed */ }
  }

  // ---- failure ----------------------------------------------------------------------------

  #memberLost(index: number, why: string, cause?: unknown): void {
    this.#fail(
      new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `stripe member ${index + 1} of ${this.#members.length} ` +
          `(${this.#members[index].channel.remote}) was lost: ${why}; a stripe cannot recover ` +
          `the chunks in flight on it, so the whole channel is closed; reconnect`,
        { cause, retryable: true },
      ),
    );
  }

  #fail(error: PresyncError): void {
    if (this.#error || this.#closing) {
      if (this.#closing) this.#closeMembers();
      return;
    }
    this.#error = error;
    try {
      this.#controller.error(error);
    } catch { /* already closed */ }
    this.#closeMembers();
  }

  #closedError(): PresyncError {
    return new PresyncError(ErrorCode.CONNECTION_LOST, `stripe to ${this.remote} is closed`, {
      retryable: true,
    });
  }

  #closeMembers(): void {
    clearTimeout(this.#linger);
    for (const out of this.#out) {
      out.closed = true;
      out.member.input.cancel();
      out.member.channel.close();
    }
    this.#wakeAll();
    this.#resolveDone();
  }

  #wakeAll(): void {
    this.#room.notify();
    this.#turn.notify();
    this.#readRoom.notify();
    for (const out of this.#out) out.wake.notify();
  }
}
