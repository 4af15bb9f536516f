import { io } from "../fs/io_error.ts";
import type { NbdAddress } from "./nbd_address.ts";
import { type ExportTable, serveNbdConnection } from "./nbd_connection.ts";
import type { NbdExport } from "./nbd_export.ts";

/** Options of {@linkcode NbdServer}. */
export interface NbdServerOptions {
  /** Called with each error that ended a client connection. Default: ignored. */
  onError?: (err: unknown) => void;
}

/**
 * An NBD server (fixed newstyle, structured replies, `base:allocation`) for a fixed set of
 * exports, on any number of TCP or Unix-socket listeners. `close()` stops listening and
 * drops every connection.
 *
 * @example
 * ```ts ignore
 * const server = new NbdServer([await FileExport.open("disk.img", { name: "disk" })]);
 * const bound = await server.listen(parseNbdAddress("127.0.0.1:10809"));
 * // nbdinfo nbd://127.0.0.1:10809/disk
 * await server.close();
 * ```
 */
export class NbdServer {
  readonly #exports: Map<string, NbdExport>;
  readonly #options: NbdServerOptions;
  readonly #listeners = new Set<Deno.Listener>();
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  #closed = false;

  constructor(exports: Iterable<NbdExport>, options: NbdServerOptions = {}) {
    this.#exports = new Map([...exports].map((ex) => [ex.name, ex]));
    this.#options = options;
  }

  /** The exports served, by name. */
  get exports(): ExportTable {
    return this.#exports;
  }

  /**
   * Starts accepting connections at `address`; resolves with the bound address (the real
   * port when 0 was asked for). A stale Unix socket file at the path is replaced.
   */
  async listen(address: NbdAddress): Promise<NbdAddress> {
    let listener: Deno.Listener;
    if (address.transport === "unix") {
      await removeStaleSocket(address.path);
      listener = await io(
        `listen on unix:${address.path}`,
        () => Promise.resolve(Deno.listen({ transport: "unix", path: address.path })),
      );
    } else {
      listener = await io(
        `listen on ${address.hostname}:${address.port}`,
        () => Promise.resolve(Deno.listen({ hostname: address.hostname, port: address.port })),
      );
    }
    this.#listeners.add(listener);
    this.#track(this.#accept(listener));
    const bound = listener.addr;
    return bound.transport === "tcp"
      ? { transport: "tcp", hostname: bound.hostname, port: bound.port }
      : address;
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const conn of listener) {
        if (this.#closed) {
          conn.close();
          break;
        }
        if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
        this.#conns.add(conn);
        this.#track(
          serveNbdConnection(conn, this.#exports, this.#options).finally(() => {
            this.#conns.delete(conn);
            try {
              conn.close();
            } catch {
              // Closed by the stream's end already.
            }
          }),
        );
      }
    } catch (err) {
      if (!this.#closed) this.#options.onError?.(err);
    }
  }

  /** Stops listening, drops all connections and waits for their handlers. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
    this.#listeners.clear();
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
    await Promise.allSettled([...this.#tasks]);
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const info = await Deno.lstat(path);
    if (info.isSocket) await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
