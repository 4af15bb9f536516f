import { controlToken, tokenPath } from "../daemon/control_server.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { errorFromReply } from "../net/sync_protocol.ts";

/** Default control address of a source agent. */
export const DEFAULT_AGENT_CONTROL = "127.0.0.1:7732";
/** Default control address of a destination daemon (`presync serve`). */
export const DEFAULT_SERVE_CONTROL = "127.0.0.1:7733";

/**
 * Sends a request to a running agent's control endpoint (default: the source agent's). The
 * token comes from `--key-file` when given, else from the token file the agent left for
 * its user.
 */
export async function controlRequest(
  control: string | undefined,
  keyFile: string | undefined,
  method: "GET" | "POST",
  path: string,
  init: { body?: unknown; signal?: AbortSignal } = {},
): Promise<Response> {
  const address = parseHostPort("control", control ?? DEFAULT_AGENT_CONTROL);
  let token: string;
  if (keyFile) token = controlToken(await readKey(keyFile));
  else {
    try {
      token = (await Deno.readTextFile(tokenPath(address.port))).trim();
    } catch {
      throw new PresyncError(
        ErrorCode.AUTH_FAILED,
        `no control token for port ${address.port}: is the agent running as this user? (or pass --key-file)`,
      );
    }
  }
  try {
    return await fetch(`http://${address.hostname}:${address.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    });
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `no presync agent answers on ${address.hostname}:${address.port} (${cause})`,
      { cause },
    );
  }
}

/** Calls a running agent's control endpoint and returns its JSON answer. */
export async function callControl(
  control: string | undefined,
  keyFile: string | undefined,
  method: "GET" | "POST",
  path: string,
): Promise<Record<string, unknown>> {
  const response = await controlRequest(control, keyFile, method, path);
  const body = await response.json();
  if (response.status === 200 && body.ok !== false) return body;
  throw errorFromReply(body, "agent");
}
