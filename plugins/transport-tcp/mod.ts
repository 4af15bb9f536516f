/**
 * The `tcp` transport plugin: sessions over plain TCP connections.
 *
 * Glossary:
 * - **transport**: opens and accepts byte channels for sessions (`agent/wire/transport.ts`).
 * - **no-delay**: Nagle's algorithm is off on every connection, so a small control frame
 *   leaves at once instead of waiting for more data.
 *
 * @example
 * ```ts ignore
 * import { tcpTransport } from "./mod.ts";
 * import { Session } from "../../agent/wire/mod.ts";
 * const session = await Session.connect(
 *   await tcpTransport.connect({ hostname: "10.0.0.2", port: 4433 }),
 *   { psk },
 * );
 * ```
 *
 * @module
 */

export { connectError, tcpTransport, wrapListener } from "./tcp_transport.ts";
