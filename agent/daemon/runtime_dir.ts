import { ErrorCode, PresyncError } from "../errors.ts";

/** Which daemon a control socket belongs to: the source agent or the destination. */
export type ControlRole = "agent" | "serve";

/** The environment and identity the runtime directory is chosen from (tests pass their own). */
export interface RuntimeEnv {
  get(name: string): string | undefined;
  uid: number;
}

function processEnv(): RuntimeEnv {
  return { get: (name) => Deno.env.get(name), uid: Deno.uid() ?? 0 };
}

/**
 * The directory holding a role's control sockets, the first of:
 * 1. `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=presync/agent` sets it for the daemon);
 * 2. `/run/presync/ROLE` for root, and for a user who owns it (a service account: systemd
 *    makes it with `User=`), so `presync status` as root finds the systemd daemons;
 * 3. `$XDG_RUNTIME_DIR/presync/ROLE` (the login session's private directory);
 * 4. `/tmp/presync-UID/ROLE`: `/tmp` is shared, so as tmux does with `/tmp/tmux-UID`, the
 *    directory is only used when it is a real directory of this user that nobody else can
 *    enter ({@linkcode prepareRuntimeDir} and the client's checks refuse anything else).
 */
export function runtimeDir(role: ControlRole, env: RuntimeEnv = processEnv()): string {
  const systemd = env.get("RUNTIME_DIRECTORY")?.split(":")[0];
  if (systemd) return systemd;
  const system = `/run/presync/${role}`;
  if (env.uid === 0 || ownedBy(system, env.uid)) return system;
  const xdg = env.get("XDG_RUNTIME_DIR");
  if (xdg) return `${xdg}/presync/${role}`;
  return `/tmp/presync-${env.uid}/${role}`;
}

function ownedBy(path: string, uid: number): boolean {
  try {
    const info = Deno.lstatSync(path);
    return info.isDirectory && info.uid === uid;
  } catch {
    return false;
  }
}

/**
 * Creates `dir` (and its parent) if needed, mode 0700, without following symlinks (mkdir
 * never does; a planted symlink is then refused by lstat), and checks that this user owns it
 * and nobody else can enter it, nor rename it away (its parent is not writable by others, or
 * sticky like `/tmp`). Throws `CONTROL_UNSAFE` naming what is wrong and the fix.
 */
export function prepareRuntimeDir(dir: string): void {
  const parent = dir.slice(0, dir.lastIndexOf("/")) || "/";
  const uid = Deno.uid() ?? 0;
  // /run/presync is shared by the roles (a host can be both a source and a destination):
  // it is made 0755, as systemd makes the parents of a RuntimeDirectory; each role's own
  // directory is 0700.
  if (!exists(parent)) mkdir(parent, parent === "/run/presync" ? 0o755 : 0o700);
  const sticky = ((Deno.lstatSync(parent).mode ?? 0) & 0o1000) !== 0;
  checkDirectory(parent, uid, sticky ? 0 : 0o022);
  if (!exists(dir)) mkdir(dir, 0o700);
  checkDirectory(dir, uid, 0o077);
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

function mkdir(path: string, mode: number): void {
  try {
    Deno.mkdirSync(path, { mode });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return;
    throw new PresyncError(
      ErrorCode.IO,
      `cannot create the control directory ${path}: ${err instanceof Error ? err.message : err}`,
      { cause: err },
    );
  }
  // mkdir's mode is reduced by the umask; a directory just made by us is not a symlink.
  Deno.chmodSync(path, mode);
}

/**
 * Throws `CONTROL_UNSAFE` unless `path` is a real directory (not a symlink) owned by `uid`
 * or root, without any of the `forbidden` permission bits.
 */
export function checkDirectory(path: string, uid: number, forbidden: number): void {
  const info = Deno.lstatSync(path);
  const fail = (what: string, fix: string) =>
    new PresyncError(
      ErrorCode.CONTROL_UNSAFE,
      `control directory ${path} ${what}: another user could reach or replace the control ` +
        `socket; ${fix}`,
    );
  if (info.isSymlink) throw fail("is a symlink", `remove it (rm ${path}) and start again`);
  if (!info.isDirectory) throw fail("is not a directory", `remove it (rm ${path})`);
  if (info.uid !== uid && info.uid !== 0) {
    throw fail(
      `belongs to uid ${info.uid}, not to this user (uid ${uid})`,
      `remove it (rm -r ${path}) or run as its owner`,
    );
  }
  const mode = (info.mode ?? 0) & 0o777;
  if (mode & forbidden) {
    throw fail(
      `has mode ${mode.toString(8).padStart(4, "0")}`,
      `make it private (chmod ${(mode & ~forbidden).toString(8)} ${path})`,
    );
  }
}
