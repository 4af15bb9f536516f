import { ErrorCode, PresyncError } from "../errors.ts";
import { type ControlRole, prepareRuntimeDir, runtimeDir, type RuntimeEnv } from "./runtime_dir.ts";

/** The longest unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** What {@linkcode claimSocketPath} found at the path. */
export type SocketClaim = "free" | "stale";

/**
 * Makes `path` ready for a daemon's control socket: creates its directory privately (see
 * {@linkcode prepareRuntimeDir}), then looks at what is there, never following a symlink:
 * nothing (`free`); a socket of this user that nobody answers on, left by a process killed
 * with -9 (removed: `stale`); a socket a live process answers on (`ADDRESS_IN_USE`: another
 * daemon runs with this socket, it is not taken from it); anything else, or another user's
 * socket (`CONTROL_UNSAFE`, left as it is).
 */
export async function claimSocketPath(path: string): Promise<SocketClaim> {
  if (new TextEncoder().encode(path).length > MAX_SOCKET_PATH_BYTES) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `control socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the most a ` +
        `unix socket path may be: give --control a shorter path`,
    );
  }
  prepareRuntimeDir(path.slice(0, path.lastIndexOf("/")) || "/");
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "free";
    throw err;
  }
  if (!info.isSocket) {
    throw new PresyncError(
      ErrorCode.CONTROL_UNSAFE,
      `${path} exists and is ${info.isSymlink ? "a symlink" : "not a socket"}: presync does ` +
        `not replace or follow it; remove it if it is not yours, and start again`,
    );
  }
  const uid = Deno.uid() ?? 0;
  if (info.uid !== uid) {
    throw new PresyncError(
      ErrorCode.CONTROL_UNSAFE,
      `control socket ${path} belongs to uid ${info.uid}, not to this user (uid ${uid}): ` +
        `presync does not take it over; remove it if it is stale`,
    );
  }
  if (await answers(path)) {
    throw new PresyncError(
      ErrorCode.ADDRESS_IN_USE,
      `another process answers on control socket ${path} (a presync daemon already running?): ` +
        `stop it, or give this one its own --control`,
    );
  }
  await Deno.remove(path);
  return "stale";
}

/** Whether a process accepts connections on the unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * The control socket's path from a `--control` value: a path when it holds a `/`, else a
 * name in the role's runtime directory (`db1` → `/run/presync/agent/db1.sock` for root);
 * `defaultName` when the flag is absent. A `HOST:PORT` (the control endpoint before it
 * became a socket) is refused with what to write instead.
 */
export function controlSocketPath(
  role: ControlRole,
  control: string | undefined,
  defaultName: string,
  env?: RuntimeEnv,
): string {
  const value = control ?? defaultName;
  if (/^[^/]*:\d+$/.test(value)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--control takes a unix socket path or name now (e.g. --control ${defaultName}, or ` +
        `--control /run/presync/${role}/${defaultName}.sock): received ${value}; for ` +
        `Prometheus, serve /metrics over TCP with --metrics-listen ${value}`,
    );
  }
  if (value.includes("/")) return value;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--control must be a socket path or a name of letters, digits, '.', '_' and '-': ` +
        `received ${JSON.stringify(value)}`,
    );
  }
  return `${runtimeDir(role, env)}/${value}.sock`;
}
