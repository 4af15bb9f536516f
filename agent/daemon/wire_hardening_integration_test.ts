import assert from "node:assert/strict";
import net from "node:net";
import { freePort, PresyncProcess } from "../../fixtures/cluster.ts";
import { readKey, writeNewKey } from "../key_file.ts";
import { Session } from "../wire/session.ts";
import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";

/** The resident set of a process, in bytes (VmRSS from /proc). */
async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-wire-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Polls `check` every 50 ms until it is true, or fails naming `what` after `timeoutMs`. */
async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function startServe(root: string, port: number, args: string[] = []): PresyncProcess {
  return new PresyncProcess([
    "serve",
    "--store",
    `${root}/store`,
    "--listen",
    `127.0.0.1:${port}`,
    "--key-file",
    `${root}/key`,
    "--control",
    `127.0.0.1:${freePort()}`,
    "--log-format",
    "json",
    ...args,
  ]);
}

Deno.test("pre-auth flood: 500 idle connections from one address cost serve little memory, and a real client still gets in", async () => {
  await withRoot(async (root) => {
    await writeNewKey(`${root}/key`);
    const port = freePort();
    const serve = startServe(root, port, ["--transport", "tcp"]);
    const sockets: net.Socket[] = [];
    try {
      await until("serve to listen", () => /"event":"listening"/.test(serve.output));
      const idle = await rssBytes(serve.child.pid);
      let closedByServer = 0;
      for (let i = 0; i < 500; i++) {
        const socket = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
        socket.on("error", () => {});
        socket.on("close", () => closedByServer++);
        sockets.push(socket);
      }
      // All but the per-source share (32) are refused at once.
      await until("the server to refuse the flood", () => closedByServer >= 500 - 32);
      const quiet = { psk: await readKey(`${root}/key`), logger: () => {} };
      const session = await Session.connect(
        await tcpTransport.connect({ hostname: "127.0.0.1", port }),
        quiet,
      );
      assert.ok((await session.ping()) >= 0, "an authenticated client is served during the flood");
      await session.close();
      const grown = (await rssBytes(serve.child.pid)) - idle;
      // Before the limits: 111 kB per pending connection (55 MB here), 2 KiB reads still 21 MiB.
      assert.ok(grown < 12 * 2 ** 20, `serve grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);
      const refusals = serve.output.match(/"event":"preauth_refused"/g) ?? [];
      assert.ok(refusals.length >= 1 && refusals.length <= 10, `${refusals.length} refusal lines`);
      assert.ok(!/Uncaught/.test(serve.output), serve.output);
    } finally {
      for (const socket of sockets) socket.destroy();
      await serve.kill("SIGTERM");
    }
  });
});
