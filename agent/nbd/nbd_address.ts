import { ErrorCode, PresyncError } from "../errors.ts";

/** Where an NBD server listens or a client connects: TCP host and port, or a Unix socket. */
export type NbdAddress =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `unix:PATH` (as given to `--nbd-listen` and
 * `--listen`). Throws `INVALID_ARGUMENT` naming the expected forms.
 *
 * @example
 * ```ts
 * import { parseNbdAddress } from "./nbd_address.ts";
 * const a = parseNbdAddress("127.0.0.1:10809");
 * console.assert(a.transport === "tcp" && a.port === 10809);
 * const b = parseNbdAddress("unix:/run/presync/disk.sock");
 * console.assert(b.transport === "unix" && b.path === "/run/presync/disk.sock");
 * ```
 */
export function parseNbdAddress(text: string): NbdAddress {
  const bad = (why: string) =>
    new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `NBD address must be HOST:PORT, [IPV6]:PORT or unix:PATH (${why}): received ${
        JSON.stringify(text)
      }`,
    );
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (path === "" || path.includes("\0")) throw bad("empty socket path");
    return { transport: "unix", path };
  }
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) throw bad("no port");
  const port = Number(match[3]);
  if (port > 65535) throw bad("port above 65535");
  return { transport: "tcp", hostname: match[1] ?? match[2], port };
}

/** The address in the form {@linkcode parseNbdAddress} reads. */
export function formatNbdAddress(address: NbdAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `${host}:${address.port}`;
}

/** An `nbd://` / `nbd+unix://` URI for `exportName` at `address` (for qemu and libnbd). */
export function nbdUri(address: NbdAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if (address.transport === "unix") {
    return `nbd+unix:///${name}?socket=${encodeURIComponent(address.path)}`;
  }
  return `nbd://${formatNbdAddress(address)}/${name}`;
}
