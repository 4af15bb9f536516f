import { ErrorCode, PresyncError } from "../errors.ts";
import type { SessionStream } from "./session_stream.ts";

/**
 * The open streams of one session by id, and the stream-id rules of `docs/PROTOCOL.md`: the
 * client opens odd ids and the server even ids, each side in increasing order; a frame for
 * an id the peer already closed is ignored, one for an id never opened is a violation. Pure.
 *
 * @example
 * ```ts ignore
 * const table = new StreamTable(true, "10.0.0.2:4433");
 * const id = table.allocateLocalId(); // 1, then 3, 5, …
 * table.checkPeerOpen(2); // the server's first stream
 * ```
 */
export class StreamTable {
  readonly #streams = new Map<number, SessionStream>();
  readonly #peerParity: number;
  readonly #remote: string;
  #nextLocalId: number;
  #lastPeerId = 0;

  /** The table of the client (`isClient`) or server side of a session with `remote`. */
  constructor(isClient: boolean, remote: string) {
    this.#nextLocalId = isClient ? 1 : 2;
    this.#peerParity = isClient ? 0 : 1;
    this.#remote = remote;
  }

  /** Streams open now. */
  get size(): number {
    return this.#streams.size;
  }

  /** The open stream `id`, if any. */
  get(id: number): SessionStream | undefined {
    return this.#streams.get(id);
  }

  /** True while stream `id` is open. */
  has(id: number): boolean {
    return this.#streams.has(id);
  }

  /** The open streams, in opening order. */
  values(): IterableIterator<SessionStream> {
    return this.#streams.values();
  }

  /** Records an open stream. */
  add(stream: SessionStream): void {
    this.#streams.set(stream.id, stream);
  }

  /** Forgets stream `id` (finished or reset). */
  delete(id: number): void {
    this.#streams.delete(id);
  }

  /** Forgets every stream. */
  clear(): void {
    this.#streams.clear();
  }

  /** The id of the next stream this side opens (consumes it). */
  allocateLocalId(): number {
    const id = this.#nextLocalId;
    this.#nextLocalId += 2;
    return id;
  }

  /** Streams opened by the peer that are still open. */
  peerOpenCount(): number {
    return [...this.#streams.keys()].filter((k) => (k & 1) === this.#peerParity).length;
  }

  /**
   * Checks and records the peer's OPEN of `id`.
   *
   * @throws {PresyncError} `PROTOCOL_VIOLATION` for the wrong parity or an id not above the
   *   peer's previous one
   */
  checkPeerOpen(id: number): void {
    if ((id & 1) !== this.#peerParity || id <= this.#lastPeerId) {
      throw this.violation(
        `opened stream ${id}: expected an ${this.#peerParity ? "odd" : "even"} id above ` +
          `${this.#lastPeerId}`,
      );
    }
    this.#lastPeerId = id;
  }

  /**
   * The stream a DATA/RESET/WINDOW frame names, undefined when already forgotten.
   *
   * @throws {PresyncError} `PROTOCOL_VIOLATION` when `id` was never opened
   */
  lookup(id: number): SessionStream | undefined {
    const stream = this.#streams.get(id);
    if (stream) return stream;
    const known = (id & 1) === this.#peerParity ? id <= this.#lastPeerId : id < this.#nextLocalId;
    if (!known) throw this.violation(`sent a frame for stream ${id}, which was never opened`);
    return undefined;
  }

  /** A `PROTOCOL_VIOLATION` naming the peer. */
  violation(message: string): PresyncError {
    return new PresyncError(ErrorCode.PROTOCOL_VIOLATION, `${this.#remote} ${message}`);
  }
}
