import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { jsonLines, PresyncProcess } from "../../fixtures/cluster.ts";
import { ErrorCode } from "../errors.ts";
import { CONTROL_ANSWER_MS, ControlClient } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

/**
 * A "daemon" on a control socket in a fresh directory that reads each request and writes
 * `answer` (raw HTTP; empty: it never answers, as one whose event loop is stuck), then holds
 * the connection open, or with `close` closes it; dispose to stop it.
 */
async function rawDaemon(
  answer: string,
  close = false,
): Promise<{ socket: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "presync-raw-" });
  const socket = `${dir}/agent.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      held.push(conn);
      await conn.read(new Uint8Array(4096));
      if (answer) await conn.write(new TextEncoder().encode(answer));
      if (close) conn.close();
    }
  })();
  return {
    socket,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of held) {
        try {
          conn.close();
        } catch {
          // closed already
        }
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The error `GET /status` meets against a daemon answering `answer` (see `rawDaemon`). */
async function statusFailure(
  answer: string,
  close: boolean,
  code: ErrorCode,
): Promise<string> {
  await using daemon = await rawDaemon(answer, close);
  using client = new ControlClient(daemon.socket, "agent");
  return (await assertRejectsCode(client.call("GET", "/status", { timeoutMs: 300 }), code)).message;
}

Deno.test("a daemon that stalls, breaks off or answers garbage mid-body: TIMEOUT, CONNECTION_LOST, PROTOCOL_VIOLATION", async () => {
  const head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
  assert.match(
    await statusFailure(`${head}{"ok":`, false, ErrorCode.TIMEOUT),
    /has not finished its answer to GET \/status in 0\.3 s/,
  );
  assert.match(
    await statusFailure(`${head}{"ok":`, true, ErrorCode.CONNECTION_LOST),
    /broke off its answer to GET \/status/,
  );
  assert.match(
    await statusFailure(
      "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!",
      false,
      ErrorCode.PROTOCOL_VIOLATION,
    ),
    /answered GET \/status with HTTP 200 and a body that is not a JSON object \("not json!"\)/,
  );
  assert.match(
    await statusFailure(
      "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnull",
      false,
      ErrorCode.PROTOCOL_VIOLATION,
    ),
    /a body that is not a JSON object \("null"\)/,
  );
});

Deno.test("a daemon that accepts but never answers is TIMEOUT after the bound, naming the socket and the request", async () => {
  await using daemon = await rawDaemon("");
  using client = new ControlClient(daemon.socket, "agent");
  const err = await assertRejectsCode(
    client.call("GET", "/status", { timeoutMs: 300 }),
    ErrorCode.TIMEOUT,
  );
  assert.match(err.message, new RegExp(`the agent on control socket ${daemon.socket} accepted`));
  assert.match(err.message, /has not answered GET \/status in 0\.3 s/);
});

Deno.test("a daemon that answers within the bound: its JSON; a caller's own signal replaces the bound", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-answering-" });
  const socket = `${dir}/agent.sock`;
  const server = Deno.serve(
    { path: socket, onListen() {} },
    async (request) => {
      // Answers /slow after 500 ms: past a 300 ms bound, within a caller's 5 s signal.
      if (new URL(request.url).pathname === "/slow") {
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      return Response.json({ ok: true, volumes: [] });
    },
  );
  try {
    using client = new ControlClient(socket, "agent");
    assert.deepEqual(await client.call("GET", "/status", { timeoutMs: 300 }), {
      ok: true,
      volumes: [],
    });
    await assertRejectsCode(client.call("GET", "/slow", { timeoutMs: 300 }), ErrorCode.TIMEOUT);
    const reply = await client.call("GET", "/slow", {
      timeoutMs: 300,
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(reply.ok, true);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("presync status against a daemon that never answers exits 5 with TIMEOUT instead of hanging", async () => {
  await using daemon = await rawDaemon("");
  const status = new PresyncProcess(["status", "--control", daemon.socket, "--json"]);
  // Past the bound by far, then killed: a hang fails the test with its output.
  const { code } = await status.wait(CONTROL_ANSWER_MS * 4, "presync status");
  assert.equal(code, ExitCode.UNREACHABLE, status.output);
  const error = jsonLines(status).at(-1);
  assert.equal(error?.code, "TIMEOUT", status.output);
  assert.match(String(error.message), /accepted the connection but has not answered GET \/status/);
});
