/**
 * A reliable, ordered, bidirectional byte stream: what a session runs over. TCP, TLS, a QUIC
 * stream, striped connections and in-memory pairs all provide one.
 */
export interface ByteChannel {
  /** Bytes from the peer; ends at the peer's close, errors on a reset. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer; `write` resolves once the transport has taken the bytes. */
  readonly writable: WritableStream<Uint8Array>;
  /** The peer's address for log lines, e.g. `127.0.0.1:4433`. */
  readonly remote: string;
  /**
   * Closes the channel at once, dropping unsent bytes. Idempotent: later calls do nothing.
   * Pending reads end or fail, pending writes fail.
   */
  close(): void;
  /**
   * Called once by the session right after the peer proved the pre-shared key, before the
   * session is handed out (client side). A trust-on-first-use transport pins the server's
   * certificate here, so only a server that also knows the key is ever pinned. A rejection
   * fails the connect.
   */
  authenticated?(): Promise<void>;
}

/** Where to connect or listen. */
export interface TransportAddress {
  /** Host name or IP address. */
  hostname: string;
  /** Port; 0 when listening picks a free one. */
  port: number;
}

/** Accepted connections of one listening transport. */
export interface TransportListener extends AsyncIterable<ByteChannel> {
  /** The address actually bound (the real port when 0 was asked). */
  readonly addr: TransportAddress;
  /** Waits for the next connection; rejects once the listener is closed. */
  accept(): Promise<ByteChannel>;
  /** Stops listening. Idempotent. Connections already accepted stay open. */
  close(): void;
}

/**
 * A transport plugin (`plugins/transport-<name>/`): opens and accepts byte channels. The
 * session layer (authentication, streams, frames) is the same over every transport.
 */
export interface Transport {
  /** Name used in configuration, e.g. `tcp`, `tls`. */
  readonly name: string;
  /**
   * Opens one connection. Each call makes a new connection; a failed call leaves nothing
   * open, so retrying is safe.
   *
   * @throws {PresyncError} `CONNECTION_LOST` (retryable) when the peer cannot be reached,
   *   `PEER_UNTRUSTED` when its certificate does not match the pin
   */
  connect(address: TransportAddress, signal?: AbortSignal): Promise<ByteChannel>;
  /** Starts listening. Call once per address. */
  listen(address: TransportAddress): TransportListener;
}

/**
 * The async iteration of a {@linkcode TransportListener}: accepted channels until the
 * listener is closed (an accept failing because of the close ends the iteration quietly).
 */
export async function* acceptUntilClosed(
  accept: () => Promise<ByteChannel>,
  isClosed: () => boolean,
): AsyncGenerator<ByteChannel> {
  while (!isClosed()) {
    try {
      yield await accept();
    } catch (error) {
      if (isClosed()) return;
      throw error;
    }
  }
}
