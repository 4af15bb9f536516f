import { ErrorCode, PresyncError } from "../errors.ts";
import { Signal } from "./_signal.ts";
import type { ByteChannel } from "./transport.ts";

interface Pipe {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  end(): void;
}

function pipe(highWaterMarkBytes: number): Pipe {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let ended = false;
  const room = new Signal();
  const readable = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c;
    },
    pull: () => room.notify(),
    cancel: () => {
      ended = true;
      room.notify();
    },
  }, { highWaterMark: highWaterMarkBytes, size: (chunk) => chunk.length });
  const writable = new WritableStream<Uint8Array>({
    write: async (chunk) => {
      if (ended) {
        throw new PresyncError(ErrorCode.CONNECTION_LOST, "memory channel closed", {
          retryable: true,
        });
      }
      controller.enqueue(chunk.slice());
      while (!ended && (controller.desiredSize ?? 0) <= 0) await room.wait();
    },
  });
  return {
    readable,
    writable,
    end: () => {
      if (ended) return;
      ended = true;
      try {
        controller.close();
      } catch { /* already closed by cancel */ }
      room.notify();
    },
  };
}

/**
 * Two in-memory {@linkcode ByteChannel}s joined back to back, for tests of the session layer
 * without sockets. Each direction buffers at most `highWaterMarkBytes` (default 64 KiB)
 * before `write` waits, like a socket buffer. `close()` on either end ends both directions
 * (the reader sees what was already buffered, then the end).
 *
 * @example
 * ```ts
 * import { memoryChannelPair } from "./memory_channel.ts";
 * const [a, b] = memoryChannelPair();
 * a.writable.getWriter().write(new Uint8Array([1]));
 * const { value } = await b.readable.getReader().read();
 * console.assert(value?.[0] === 1);
 * a.close();
 * ```
 */
export function memoryChannelPair(highWaterMarkBytes = 65536): [ByteChannel, ByteChannel] {
  const ab = pipe(highWaterMarkBytes);
  const ba = pipe(highWaterMarkBytes);
  const close = () => {
    ab.end();
    ba.end();
  };
  return [
    { readable: ba.readable, writable: ab.writable, remote: "memory:b", close },
    { readable: ab.readable, writable: ba.writable, remote: "memory:a", close },
  ];
}
