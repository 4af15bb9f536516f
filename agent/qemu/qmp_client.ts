import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";
import { LineSplitter } from "./_line_splitter.ts";
import {
  decodeQmpMessage,
  encodeQmpCommand,
  type QemuVersion,
  type QmpMessage,
} from "./qmp_message.ts";

/** Default time QEMU has to answer one command (and to greet), in ms. */
export const DEFAULT_QMP_TIMEOUT_MS = 10_000;
/** Default bound on one line from QEMU: 1 MiB (`query-*` replies of big VMs stay far below). */
export const DEFAULT_QMP_MAX_LINE_BYTES = 1 << 20;

/** Options of {@linkcode QmpClient.connect}. */
export interface QmpClientOptions {
  /** Time QEMU has to greet and to answer each command, in ms. */
  timeoutMs?: number;
  /** Longest line accepted from QEMU, in bytes; a longer one ends the connection. */
  maxLineBytes?: number;
}

/** An asynchronous event QEMU sent (e.g. `BLOCK_JOB_CANCELLED`, `STOP`). */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's timestamp of the event, in ms since the epoch. */
  timestampMs: number;
}

interface Waiting {
  command: string;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A client of QEMU's machine protocol (QMP) over a Unix socket: reads the greeting,
 * negotiates `qmp_capabilities`, runs commands (each under its own id, so replies are
 * matched even after a timeout) and delivers events. Every line from QEMU is bounded; a
 * command gets `TIMEOUT` when QEMU does not answer in time, `QMP_COMMAND_FAILED` when it
 * answers with an error, and `CONNECTION_LOST` when the socket closes (QEMU quit or died).
 *
 * @example
 * ```ts ignore
 * await using qmp = await QmpClient.connect("/run/vm1.qmp");
 * const status = await qmp.execute("query-status") as { status: string };
 * const stopped = qmp.waitForEvent("STOP");
 * await qmp.execute("stop");
 * await stopped;
 * ```
 */
export class QmpClient implements AsyncDisposable {
  /** The socket path. */
  readonly path: string;
  /** QEMU's version from the greeting. */
  readonly version: QemuVersion;
  /** Resolves when the connection has ended, with the reason (null after `close()`). */
  readonly closed: Promise<PresyncError | null>;
  readonly #conn: Deno.UnixConn;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #timeoutMs: number;
  readonly #waiting = new Map<string, Waiting>();
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  readonly #onEnd = new Set<(reason: PresyncError) => void>();
  readonly #encoder = new TextEncoder();
  #nextId = 1;
  #ended: PresyncError | null = null;
  #closing = false;

  private constructor(
    path: string,
    conn: Deno.UnixConn,
    version: QemuVersion,
    lines: AsyncIterator<string>,
    timeoutMs: number,
  ) {
    this.path = path;
    this.#conn = conn;
    this.version = version;
    this.#writer = conn.writable.getWriter();
    this.#timeoutMs = timeoutMs;
    this.closed = this.#readLoop(lines);
  }

  /** Connects to QEMU's QMP socket at `path` and leaves capabilities negotiation mode. */
  static async connect(path: string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    const conn = await io(
      `connect to QEMU's QMP socket ${path} (is QEMU running with -qmp unix:${path},server=on?)`,
      () => Deno.connect({ transport: "unix", path }),
    );
    const lines = readLines(conn, options.maxLineBytes ?? DEFAULT_QMP_MAX_LINE_BYTES);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const greeting = await Promise.race([
        greetingOf(path, lines),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                timeout(
                  `greet on ${path} (QEMU serves one client per QMP socket: is another ` +
                    `one, e.g. libvirt or a second presync, connected to it?)`,
                  timeoutMs,
                ),
              ),
            timeoutMs,
          );
        }),
      ]);
      const client = new QmpClient(path, conn, greeting.version, lines, timeoutMs);
      try {
        await client.execute("qmp_capabilities");
      } catch (err) {
        await client.close();
        throw err;
      }
      return client;
    } catch (err) {
      // Closing the socket also ends a read still waiting for the greeting.
      try {
        conn.close();
      } catch {
        // Closed already.
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the connection has ended (QEMU went away, a protocol error, or `close()`). */
  get isClosed(): boolean {
    return this.#ended !== null || this.#closing;
  }

  /**
   * Runs `command` with `args` and resolves with its `return` value. May be called
   * concurrently; QEMU answers in order. Not retried here: retrying is the caller's choice,
   * as many commands are not idempotent.
   */
  execute(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<unknown> {
    if (this.#ended) return Promise.reject(this.#ended);
    if (this.#closing) return Promise.reject(lost(this.path, "(closed by presync)"));
    const id = `presync-${this.#nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(timeout(`answer ${command}`, timeoutMs));
      }, timeoutMs);
      this.#waiting.set(id, { command, resolve, reject, timer });
      this.#writer.write(this.#encoder.encode(encodeQmpCommand(id, command, args))).catch(
        (err) => this.#fail(lost(this.path, `while sending ${command}: ${err}`)),
      );
    });
  }

  /** Calls `listener` for every event from now on; returns a function that unsubscribes. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The next event named `name` for which `match` (default: any) is true, from the moment
   * of this call: call it *before* the command that causes the event. Rejects with
   * `TIMEOUT` after `timeoutMs` and with `CONNECTION_LOST` when the connection ends.
   */
  waitForEvent(
    name: string,
    match: (data: Record<string, unknown>) => boolean = () => true,
    timeoutMs = this.#timeoutMs,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      if (this.#ended) return reject(this.#ended);
      const stop = () => {
        clearTimeout(timer);
        unsubscribe();
        this.#onEnd.delete(ended);
      };
      const timer = setTimeout(() => {
        stop();
        reject(timeout(`send event ${name}`, timeoutMs));
      }, timeoutMs);
      const ended = (reason: PresyncError) => {
        stop();
        reject(reason);
      };
      this.#onEnd.add(ended);
      const unsubscribe = this.onEvent((event) => {
        if (event.event === name && match(event.data)) {
          stop();
          resolve(event);
        }
      });
    });
  }

  async #readLoop(lines: AsyncIterator<string>): Promise<PresyncError | null> {
    let reason: PresyncError | null = null;
    try {
      while (true) {
        const next = await lines.next();
        if (next.done) break;
        const message = decodeQmpMessage(next.value);
        if (message.kind === "event") {
          const { event, data, timestampMs } = message;
          for (const listener of [...this.#listeners]) listener({ event, data, timestampMs });
          continue;
        }
        if (message.kind === "greeting") {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `QMP socket ${this.path} sent a second greeting in the middle of a session`,
          );
        }
        const waiting = message.id === null ? undefined : this.#waiting.get(message.id);
        if (!waiting) continue; // The answer to a command that already timed out.
        this.#waiting.delete(message.id!);
        clearTimeout(waiting.timer);
        if (message.kind === "return") waiting.resolve(message.value);
        else {
          waiting.reject(
            new PresyncError(
              ErrorCode.QMP_COMMAND_FAILED,
              `QEMU refused QMP command ${waiting.command} (${message.errorClass}): ${message.desc}`,
            ),
          );
        }
      }
      if (!this.#closing) reason = lost(this.path, "(QEMU quit or was killed)");
    } catch (err) {
      if (!this.#closing) {
        reason = err instanceof PresyncError
          ? err
          : lost(this.path, `while reading: ${err instanceof Error ? err.message : err}`);
      }
    }
    this.#fail(reason);
    return reason;
  }

  #fail(reason: PresyncError | null): void {
    if (this.#ended) return;
    this.#ended = reason ?? lost(this.path, "(closed by presync)");
    for (const waiting of this.#waiting.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(this.#ended);
    }
    this.#waiting.clear();
    for (const ended of [...this.#onEnd]) ended(this.#ended);
    this.#onEnd.clear();
    this.#listeners.clear();
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Closes the connection; commands still waiting fail with `CONNECTION_LOST`. Idempotent. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#fail(null);
    await this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The lines QEMU sends on `conn`, bounded by `maxLineBytes`. */
async function* readLines(conn: Deno.UnixConn, maxLineBytes: number): AsyncGenerator<string> {
  const splitter = new LineSplitter(maxLineBytes);
  const reader = conn.readable.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* splitter.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}

function timeout(what: string, timeoutMs: number): PresyncError {
  return new PresyncError(
    ErrorCode.TIMEOUT,
    `QEMU did not ${what} within ${timeoutMs} ms over QMP; it may be hung or overloaded ` +
      `(check that the VM's QEMU process is alive and not stuck in I/O)`,
    { retryable: true },
  );
}

function lost(path: string, when: string): PresyncError {
  return new PresyncError(
    ErrorCode.CONNECTION_LOST,
    `QMP connection to ${path} ended ${when}; presync reconnects when QEMU is back`,
    { retryable: true },
  );
}

/**
 * Events a QMP socket may send ahead of its greeting: QEMU can still hold, in the monitor's
 * output buffer, events of the session that just ended, and writes them to the next client
 * first (seen while a block job ended as the previous client disconnected).
 */
const MAX_STALE_EVENTS = 256;

/** Reads QEMU's greeting, skipping a previous session's stale events before it. */
async function greetingOf(
  path: string,
  lines: AsyncIterator<string>,
): Promise<Extract<QmpMessage, { kind: "greeting" }>> {
  for (let stale = 0;; stale++) {
    const next = await lines.next();
    if (next.done) throw lost(path, "before its greeting");
    const message = decodeQmpMessage(next.value);
    if (message.kind === "greeting") return message;
    if (message.kind !== "event" || stale === MAX_STALE_EVENTS) {
      const first = message.kind === "event"
        ? `${MAX_STALE_EVENTS} events and no greeting`
        : `a ${message.kind}, not a greeting ({"QMP": …})`;
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `QMP socket ${path} sent ${first}; is it a QMP monitor (-qmp), not an HMP one ` +
          `(-monitor)?`,
      );
    }
  }
}
