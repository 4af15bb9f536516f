import { controlToken, tokenPath } from "../daemon/control_server.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { errorFromReply } from "../net/sync_protocol.ts";

/** Default control address of a source agent. */
export const DEFAULT_AGENT_CONTROL = "127.0.0.1:7732";

/**
 * Calls a running agent's control endpoint. The token comes from `--key-file` when given,
 * else from the token file the agent left for its user.
 */
export async function callControl(
  control: string | undefined,
  keyFile: string | undefined,
  method: "GET" | "POST",
  path: string,
): Promise<Record<string, unknown>> {
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
  let response: Response;
  try {
    response = await fetch(`http://${address.hostname}:${address.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
    });
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `no presync agent answers on ${address.hostname}:${address.port} (${cause})`,
      { cause },
    );
  }
  const body = await response.json();
  if (response.status === 200 && body.ok !== false) return body;
  throw errorFromReply(body, "agent");
}
