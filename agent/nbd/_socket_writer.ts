/** What replies are written to: a stream writer, or direct socket writes. */
export interface ByteSink {
  /** Resolves once all of `chunk` is written. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the writing side; never used again after. */
  close(): Promise<void>;
}

/**
 * Writes to a socket with direct ops (`Deno.Conn.write`, one syscall per call) instead of
 * through `conn.writable`, whose queue adds promise hops to every reply. Reads stay on
 * `conn.readable`: its read-ahead keeps the next requests buffered while one is handled,
 * which pipelined clients need (direct reads made queue-depth-32 writes slower, measured).
 */
export class SocketWriter implements ByteSink {
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length;) at += await this.#conn.write(chunk.subarray(at));
  }

  async close(): Promise<void> {
    await (this.#conn as Deno.UnixConn).closeWrite();
  }
}
