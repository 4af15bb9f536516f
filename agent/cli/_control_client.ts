import { controlSocketPath } from "../daemon/control_socket.ts";
import { type ControlRole, runtimeDir } from "../daemon/runtime_dir.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { errorFromReply } from "../net/sync_protocol.ts";

/** The daemon a command talks to: its role, `--control` if given, the volume it is about. */
export interface ControlTarget {
  role: ControlRole;
  /** `--control`: a socket path or a name in the role's runtime directory. */
  control?: string;
  /** The volume the command is about: picks, among several agents, the one that has it. */
  volume?: string;
}

/**
 * How long a daemon has to answer a control request (status, pause, resume…) before the
 * command gives up with `TIMEOUT`: a running daemon answers them in milliseconds.
 */
export const CONTROL_ANSWER_MS = 15_000;

/**
 * An HTTP client on a daemon's control socket, checked before the first byte is sent (see
 * {@linkcode checkControlSocket}). Close it (or `using`) when done.
 */
export class ControlClient {
  readonly socket: string;
  readonly #client: Deno.HttpClient;
  readonly #who: string;

  constructor(socket: string, role: ControlRole) {
    checkControlSocket(socket);
    this.socket = socket;
    this.#who = role === "serve" ? "daemon" : "agent";
    this.#client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
  }

  /**
   * Sends a request; a daemon that does not answer is `CONNECTION_LOST` (exit 5). Without a
   * `signal` of the caller's, the daemon has `timeoutMs` (default
   * {@linkcode CONTROL_ANSWER_MS}; null: no bound) to answer, or it is `TIMEOUT` (exit 5): a
   * daemon that accepts the connection but is stuck must not hang the command.
   */
  async request(
    method: "GET" | "POST",
    path: string,
    init: { body?: unknown; signal?: AbortSignal; timeoutMs?: number | null } = {},
  ): Promise<Response> {
    return (await this.#exchange(method, path, init, null)).response;
  }

  /**
   * Calls the endpoint and returns its JSON answer, read within the same bound as the
   * headers; an error answer is thrown as its code, a body that is not a JSON
   * object is `PROTOCOL_VIOLATION`.
   */
  async call(
    method: "GET" | "POST",
    path: string,
    init: { body?: unknown; signal?: AbortSignal; timeoutMs?: number | null } = {},
  ): Promise<Record<string, unknown>> {
    const { response, body } = await this.#exchange(method, path, init, "json");
    if (response.status === 200 && body.ok !== false) return body;
    throw errorFromReply(body, this.#who);
  }

  /** The request, and with `read` its body parsed as JSON, under one bound. */
  async #exchange(
    method: "GET" | "POST",
    path: string,
    init: { body?: unknown; signal?: AbortSignal; timeoutMs?: number | null },
    read: "json" | null,
  ): Promise<{ response: Response; body: Record<string, unknown> }> {
    const timeoutMs = init.timeoutMs === undefined ? CONTROL_ANSWER_MS : init.timeoutMs;
    const bound = init.signal === undefined && timeoutMs !== null
      ? AbortSignal.timeout(timeoutMs)
      : undefined;
    let response: Response | undefined;
    try {
      response = await fetch(`http://presync${path}`, {
        method,
        client: this.#client,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: init.signal ?? bound,
      });
      if (read === null) return { response, body: {} };
      const text = await response.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `the ${this.#who} on control socket ${this.socket} answered ${method} ${path} with ` +
            `HTTP ${response.status} and a body that is not a JSON object (${
              JSON.stringify(text.slice(0, 80))
            }): is another program listening on that socket?`,
        );
      }
      return { response, body: body as Record<string, unknown> };
    } catch (cause) {
      if (cause instanceof PresyncError || init.signal?.aborted) throw cause;
      if (bound?.aborted) {
        throw new PresyncError(
          ErrorCode.TIMEOUT,
          `the ${this.#who} on control socket ${this.socket} accepted the connection but has not ` +
            `${response ? "finished its answer to" : "answered"} ${method} ${path} in ${
              timeoutMs! / 1000
            } s: it is stuck or overloaded (its log says which)`,
          { cause, retryable: true },
        );
      }
      const why = cause instanceof Error ? cause.message : String(cause);
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        response
          ? `the ${this.#who} on control socket ${this.socket} broke off its answer to ` +
            `${method} ${path} (it stopped or was killed?): ${why}`
          : `nothing answers on control socket ${this.socket} (the daemon stopped or was ` +
            `killed?): ${why}`,
        { cause, retryable: true },
      );
    }
  }

  close(): void {
    this.#client.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The control sockets a command should talk to: the one `--control` names; else, in the
 * role's runtime directory, `VOLUME.sock` when there is one, else every `*.sock` there (the
 * caller picks the agent that has the volume, or asks them all). None: `CONNECTION_LOST`
 * (exit 5) saying where it looked.
 */
export function findControlSockets(target: ControlTarget): string[] {
  const defaultName = target.role === "serve" ? "serve" : target.volume ?? "agent";
  if (target.control !== undefined) {
    return [controlSocketPath(target.role, target.control, defaultName)];
  }
  const dir = runtimeDir(target.role);
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".sock")).map((e) => e.name)
      .sort();
  } catch {
    names = [];
  }
  if (target.volume && names.includes(`${target.volume}.sock`)) {
    return [`${dir}/${target.volume}.sock`];
  }
  if (names.length === 0) {
    const what = target.role === "serve" ? "presync serve" : "presync agent";
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `no ${what} is running for this user: no control socket in ${dir} (start ${what}; if ` +
        `it runs as another user, run this command as that user or as root; or give --control)`,
    );
  }
  return names.map((name) => `${dir}/${name}`);
}

/**
 * Opens the control client of the daemon for `target`: with several agents running, the
 * one whose status lists `target.volume` (or the only one).
 */
export async function connectControl(target: ControlTarget): Promise<ControlClient> {
  const sockets = findControlSockets(target);
  if (sockets.length === 1) return new ControlClient(sockets[0], target.role);
  for (const socket of sockets) {
    const client = new ControlClient(socket, target.role);
    const status = await client.call("GET", "/status").catch(() => null);
    const volumes = (status?.volumes ?? []) as { name?: string }[];
    if (!target.volume || volumes.some((v) => v.name === target.volume)) return client;
    client.close();
  }
  throw new PresyncError(
    ErrorCode.VOLUME_NOT_FOUND,
    `no running agent has a volume named ${JSON.stringify(target.volume)} (asked ${
      sockets.join(", ")
    })`,
  );
}

/**
 * Calls one endpoint of the daemon for `target` and returns its JSON answer, within
 * `timeoutMs` (see {@linkcode ControlClient.request}; null for work that scales with the
 * volume, as verify's).
 */
export async function callControl(
  target: ControlTarget,
  method: "GET" | "POST",
  path: string,
  timeoutMs: number | null = CONTROL_ANSWER_MS,
): Promise<Record<string, unknown>> {
  using client = await connectControl(target);
  return await client.call(method, path, { timeoutMs });
}

/**
 * Refuses a control socket another user could have put there (`CONTROL_UNSAFE`), before
 * anything is sent to it: it must be a socket (not a symlink or a file), in a real directory
 * that nobody but its owner can write, owned by the socket's owner or root; and the socket
 * must belong to this user or root (root may talk to a service account's socket in that
 * account's own directory, e.g. `presync serve` running as `presync`).
 */
export function checkControlSocket(socket: string): void {
  const uid = Deno.uid() ?? 0;
  const unsafe = (what: string) =>
    new PresyncError(
      ErrorCode.CONTROL_UNSAFE,
      `refusing control socket ${socket}: ${what}, so another user could be answering on it`,
    );
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(socket);
  } catch {
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `no control socket at ${socket}: is the daemon running (as this user)?`,
    );
  }
  if (!info.isSocket) throw unsafe(info.isSymlink ? "it is a symlink" : "it is not a socket");
  const dirPath = Deno.realPathSync(socket.slice(0, socket.lastIndexOf("/")) || "/");
  const dir = Deno.lstatSync(dirPath);
  const dirMode = (dir.mode ?? 0) & 0o777;
  if (dirMode & 0o022) {
    throw unsafe(`its directory ${dirPath} has mode ${dirMode.toString(8)} (others may write)`);
  }
  if (dir.uid !== info.uid && dir.uid !== 0) {
    throw unsafe(`its directory ${dirPath} belongs to uid ${dir.uid}, the socket to ${info.uid}`);
  }
  if (uid !== 0 && info.uid !== uid && info.uid !== 0) {
    throw unsafe(`it belongs to uid ${info.uid}, not to this user (uid ${uid}) or root`);
  }
}
