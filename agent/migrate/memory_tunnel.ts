import type { Codec } from "../codec/codec.ts";
import { BLOCK_FRAME_HEADER_BYTES, decodeBlockFrame, encodeBlockFrame } from "../codec/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";

/** Most raw bytes in one tunnel record (QEMU writes its stream in pieces of up to 32 KiB). */
export const MAX_TUNNEL_CHUNK_BYTES = 256 * 1024;

/** Bytes of a record's length prefix. */
const LENGTH_BYTES = 4;

/** Either end of a tunnel: a byte stream in each direction. */
export interface ByteDuplex {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  /**
   * Ends the write direction only (a socket's shutdown of writing), used instead of closing
   * `writable` when present: closing a Deno socket's writable closes the whole socket, which
   * would cut what the peer still sends back.
   */
  closeWrite?(): Promise<void>;
}

/** Options of {@linkcode runMemoryTunnel}. */
export interface MemoryTunnelOptions {
  /** The session's codec, used to compress what is sent. */
  codec: Codec;
  /** Codecs able to decode what the peer sends (by algorithm id). */
  codecs: readonly Codec[];
  /** Compression level (default: the codec's). */
  level?: number;
  /** Aborting ends the tunnel at once: both ends are aborted. */
  signal?: AbortSignal;
  /**
   * Settles when the link carrying `remote` is gone (the session's `closed`): a tunnel not
   * finished by then aborts, even while its local end is idle.
   */
  linkClosed?: Promise<unknown>;
  /**
   * Called once the sending direction ended cleanly: its last record and the FIN were handed
   * to `remote` (e.g. the session's transport), so whatever is sent after on that link
   * queues behind them.
   */
  onSendEnded?: () => void;
  /**
   * Receiving: the last record is held back until the peer's end arrived and this resolved,
   * then written, then `local` ends. QEMU reads the end of its migration stream in that
   * record, so a destination QEMU cannot complete, hence run, before it (its disk's
   * switchover to the final generation). A rejection aborts the tunnel.
   */
  beforeEnd?: () => Promise<void>;
}

/** Byte counts of a tunnel, one direction each. */
export interface TunnelStats {
  /** Bytes read from the local end and sent. */
  sentRawBytes: number;
  /** Bytes of records sent (compressed, with their headers). */
  sentWireBytes: number;
  /** Bytes received and written to the local end. */
  receivedRawBytes: number;
  /** Bytes of records received. */
  receivedWireBytes: number;
  /**
   * When the sending direction ended, its end passed on (the last record and the FIN handed
   * to the transport), wall clock ms (`Date.now()`, comparable with QEMU's event times and
   * the other site's log); 0 while it runs.
   */
  sendEndedAtMs: number;
  /** When the receiving direction ended, its last byte written to `local`, wall clock ms. */
  receiveEndedAtMs: number;
}

/**
 * Carries a byte stream between `local` (e.g. QEMU's migration socket) and `remote` (a
 * session stream at memory priority) in both directions: what `local` gives is cut into
 * records of at most {@linkcode MAX_TUNNEL_CHUNK_BYTES}, each compressed with the session's
 * codec (block frames, `docs/PROTOCOL.md`) behind a 4-byte length; what `remote` gives is
 * decoded and written to `local`. Memory stays bounded: one record per direction is in hand at
 * a time and every write waits for its destination (the session's windows, the socket).
 *
 * A direction ends cleanly when its reader ends (the peer's FIN, or QEMU closing its side):
 * the end is passed on (FIN, or closing the local writable). The tunnel resolves with its
 * counters once both directions ended. Anything else — the link cut (the stream is reset),
 * QEMU gone, a record longer than the bound or not decoding, `signal` aborting — aborts both
 * ends and rejects with `MIGRATION_ABORTED`, its cause attached.
 *
 * @example
 * ```ts ignore
 * const stream = session.openStream(Priority.MEMORY);
 * const qemu = await Deno.connect({ transport: "unix", path: "/run/vm1-migrate.sock" });
 * const stats = await runMemoryTunnel(qemu, stream, { codec, codecs: [codec] });
 * ```
 */
export async function runMemoryTunnel(
  local: ByteDuplex,
  remote: ByteDuplex,
  options: MemoryTunnelOptions,
): Promise<TunnelStats> {
  const stats: TunnelStats = {
    sentRawBytes: 0,
    sentWireBytes: 0,
    receivedRawBytes: 0,
    receivedWireBytes: 0,
    sendEndedAtMs: 0,
    receiveEndedAtMs: 0,
  };
  const stop = new AbortController();
  const onAbort = () => stop.abort(options.signal?.reason ?? "aborted");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  let failure: unknown;
  const fail = (err: unknown) => {
    if (failure === undefined) failure = err;
    stop.abort(err);
  };
  let finished = false;
  const onLinkClosed = (reason?: unknown) => {
    if (finished) return;
    fail(
      reason ??
        new PresyncError(ErrorCode.CONNECTION_LOST, "the session closed with the tunnel open", {
          retryable: true,
        }),
    );
  };
  options.linkClosed?.then(() => onLinkClosed(), onLinkClosed);
  try {
    await Promise.all([
      pump(local.readable, remote.writable, stop.signal, (chunk) => {
        const records: Uint8Array[] = [];
        for (let at = 0; at < chunk.length; at += MAX_TUNNEL_CHUNK_BYTES) {
          const piece = chunk.subarray(at, at + MAX_TUNNEL_CHUNK_BYTES);
          // Compressed when that shrinks it, else raw (encodeBlockFrame decides).
          const frame = encodeBlockFrame(piece, options.codec, { level: options.level });
          const record = new Uint8Array(LENGTH_BYTES + frame.length);
          new DataView(record.buffer).setUint32(0, frame.length);
          record.set(frame, LENGTH_BYTES);
          stats.sentRawBytes += piece.length;
          stats.sentWireBytes += record.length;
          records.push(record);
        }
        return records;
      }).then(() => {
        stats.sendEndedAtMs = Date.now();
        options.onSendEnded?.();
      }, fail),
      pump(
        remote.readable.pipeThrough(new RecordSplitter()),
        local.writable,
        stop.signal,
        (frame) => {
          const raw = decodeBlockFrame(frame, {
            maxRawLength: MAX_TUNNEL_CHUNK_BYTES,
            codecs: options.codecs,
          });
          stats.receivedWireBytes += LENGTH_BYTES + frame.length;
          stats.receivedRawBytes += raw.length;
          return [raw];
        },
        // A socket QEMU closed already has no write direction left to end.
        local.closeWrite && (() => local.closeWrite!().catch(() => {})),
        options.beforeEnd,
      ).then(() => stats.receiveEndedAtMs = Date.now(), fail),
    ]);
    if (failure === undefined && options.signal?.aborted) failure = options.signal.reason;
  } finally {
    finished = true;
    options.signal?.removeEventListener("abort", onAbort);
  }
  if (failure !== undefined) {
    throw new PresyncError(
      ErrorCode.MIGRATION_ABORTED,
      `the VM's memory migration stream was cut after ${stats.sentRawBytes} bytes sent and ` +
        `${stats.receivedRawBytes} received (${describe(failure)}); the source VM keeps running`,
      { cause: failure },
    );
  }
  return stats;
}

function describe(err: unknown): string {
  return err instanceof PresyncError ? `${err.code}: ${err.message}` : String(err);
}

/**
 * Moves `from` to `to` through `transform`, one chunk in hand at a time; on `from`'s end,
 * closes `to`. With `beforeEnd`, the last chunk is held until `from` ended and `beforeEnd`
 * resolved. When `signal` aborts (the other direction failed) or anything fails, cancels
 * `from`, aborts `to` and rethrows.
 */
async function pump(
  from: ReadableStream<Uint8Array>,
  to: WritableStream<Uint8Array>,
  signal: AbortSignal,
  transform: (chunk: Uint8Array) => Uint8Array[],
  closeWrite?: () => Promise<void>,
  beforeEnd?: () => Promise<void>,
): Promise<void> {
  const reader = from.getReader();
  const writer = to.getWriter();
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    let held: Uint8Array | null = null;
    while (true) {
      const { value, done } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      for (const out of transform(value)) {
        if (!beforeEnd) await Promise.race([writer.write(out), aborted]);
        else {
          if (held) await Promise.race([writer.write(held), aborted]);
          held = out;
        }
      }
    }
    if (beforeEnd) {
      await Promise.race([beforeEnd(), aborted]);
      if (held) await Promise.race([writer.write(held), aborted]);
    }
    await Promise.race([closeWrite ? writer.ready.then(closeWrite) : writer.close(), aborted]);
  } catch (err) {
    reader.cancel(err).catch(() => {});
    writer.abort(err).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
    writer.releaseLock();
  }
}

/**
 * Splits the bytes of a tunnel's stream into its records (the block frame of each, without
 * the length). A length beyond what one record can hold is refused before anything is
 * buffered for it; a stream ending inside a record is an error.
 */
export class RecordSplitter extends TransformStream<Uint8Array, Uint8Array> {
  constructor() {
    let buffered = new Uint8Array(0);
    const maxFrame = BLOCK_FRAME_HEADER_BYTES + MAX_TUNNEL_CHUNK_BYTES;
    super({
      transform(chunk, controller) {
        const joined = new Uint8Array(buffered.length + chunk.length);
        joined.set(buffered);
        joined.set(chunk, buffered.length);
        let at = 0;
        while (joined.length - at >= LENGTH_BYTES) {
          const length = new DataView(joined.buffer, joined.byteOffset + at).getUint32(0);
          if (length > maxFrame) {
            throw new PresyncError(
              ErrorCode.FRAME_TOO_LARGE,
              `memory tunnel record of ${length} bytes: expected at most ${maxFrame}`,
            );
          }
          if (joined.length - at - LENGTH_BYTES < length) break;
          controller.enqueue(joined.slice(at + LENGTH_BYTES, at + LENGTH_BYTES + length));
          at += LENGTH_BYTES + length;
        }
        buffered = joined.slice(at);
      },
      flush() {
        if (buffered.length > 0) {
          throw new PresyncError(
            ErrorCode.FRAME_MALFORMED,
            `the memory tunnel's stream ended inside a record (${buffered.length} bytes of it)`,
          );
        }
      },
    });
  }
}
