import type tls from "node:tls";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { ByteChannel } from "../../agent/wire/transport.ts";

/** How long `close()` lets buffered bytes drain before the socket is destroyed, in ms. */
const CLOSE_LINGER_MS = 2000;
/**
 * Bytes a write may leave queued in the socket before it waits for `drain`: well above
 * node's 16 KiB default, which a 16 KiB session frame alone exceeds (every write would wait
 * for the socket to empty, leaving the link idle between frames).
 */
const WRITE_BUFFER_BYTES = 256 * 1024;
/** Bytes the readable holds before the socket is paused (backpressure to the peer). */
const READ_HIGH_WATER_BYTES = 256 * 1024;

function linkError(remote: string, what: string, cause?: unknown): PresyncError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new PresyncError(
    ErrorCode.CONNECTION_LOST,
    `TLS connection to ${remote} ${what}${detail}`,
    {
      cause,
      retryable: true,
    },
  );
}

/**
 * A node:tls socket as a {@linkcode ByteChannel}, with backpressure both ways. The socket's
 * events may come in any order (`end` after `error`, `close` before `end`, errors after
 * `close`, a failed write): each is folded into one outcome per direction, the first one,
 * so the readable ends once (closed at the peer's end of stream, else errored with a
 * retryable `CONNECTION_LOST`) and writes fail with that error; nothing is ever thrown from
 * an event handler. `close()` ends the readable at once but lets bytes already written drain
 * (at most 2 s) before the socket goes.
 */
export function socketChannel(socket: tls.TLSSocket, remote: string): ByteChannel {
  let readDone = false;
  let failure: PresyncError | undefined;
  let drained: (() => void) | undefined;
  let ended: (() => void) | undefined;
  let reader!: ReadableStreamDefaultController<Uint8Array>;
  let writer!: WritableStreamDefaultController;

  const endRead = (error?: PresyncError) => {
    if (readDone) return;
    readDone = true;
    if (error) reader.error(error);
    else reader.close();
  };
  const fail = (error: PresyncError) => {
    failure ??= error;
    endRead(failure);
    writer.error(failure);
    drained?.();
    ended?.();
  };

  const readable = new ReadableStream<Uint8Array>({
    start(controller) {
      reader = controller;
    },
    pull() {
      socket.resume();
    },
    cancel() {
      readDone = true;
      socket.destroy();
    },
  }, { highWaterMark: READ_HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength });
  const writable = new WritableStream<Uint8Array>({
    start(controller) {
      writer = controller;
    },
    write(chunk) {
      if (failure) throw failure;
      socket.write(chunk);
      if (socket.writableLength < WRITE_BUFFER_BYTES) return;
      // Enough queued in the socket: wait until it drains (or the connection fails).
      return new Promise<void>((resolve, reject) => {
        drained = () => {
          drained = undefined;
          failure ? reject(failure) : resolve();
        };
      });
    },
    close() {
      if (failure) throw failure;
      return new Promise<void>((resolve, reject) => {
        ended = () => failure ? reject(failure) : resolve();
        socket.end(() => ended?.());
      });
    },
    abort() {
      socket.destroy();
    },
  });

  socket.on("data", (data: Uint8Array) => {
    if (readDone) return;
    reader.enqueue(new Uint8Array(data));
    if ((reader.desiredSize ?? 0) <= 0) socket.pause();
  });
  socket.on("drain", () => drained?.());
  socket.on("end", () => endRead());
  socket.on("error", (error) => fail(linkError(remote, "failed", error)));
  socket.on("close", () => fail(linkError(remote, "closed")));
  let closing = false;
  const close = () => {
    if (closing) return;
    closing = true;
    endRead();
    if (failure || socket.destroyed) return void socket.destroy();
    // Bytes the socket took are still in its buffer (a write resolves before they are sent,
    // e.g. the session's last GOAWAY): end() flushes them, then close_notify and FIN. A peer
    // that never reads them does not hold the socket for longer than CLOSE_LINGER_MS.
    socket.end();
    const timer = setTimeout(() => socket.destroy(), CLOSE_LINGER_MS);
    Deno.unrefTimer(timer);
    socket.once("close", () => clearTimeout(timer));
  };
  return { readable, writable, remote, close };
}
