import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Priority, Session, type SessionLogEntry } from "../../agent/wire/mod.ts";
import { tcpTransport } from "./mod.ts";

const PSK = new Uint8Array(32).fill(8);

Deno.test("tcp: a session carries a stream over loopback TCP", async () => {
  const listener = tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
  const quiet = { psk: PSK, logger: () => {} };
  const [client, server] = await Promise.all([
    tcpTransport.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
    listener.accept().then((ch) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  const writer = client.openStream(Priority.ON_DEMAND).writable.getWriter();
  await writer.write(new Uint8Array(100_000).fill(1));
  await writer.close();
  let got = 0;
  for await (const chunk of (await server.acceptStream())!.readable) got += chunk.length;
  assert.equal(got, 100_000);
  await client.close();
  await server.closed;
});

Deno.test("tcp: wrong key over TCP: AUTH_FAILED for the client, one log line on the server", async () => {
  const listener = tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
  const logs: SessionLogEntry[] = [];
  const serving = listener.accept().then((ch) =>
    Session.accept(ch, { psk: PSK, logger: (e) => logs.push(e) })
  );
  serving.catch(() => {}); // asserted below; may settle first
  const channel = await tcpTransport.connect(listener.addr);
  await assertRejectsCode(
    Session.connect(channel, { psk: new Uint8Array(32), logger: () => {} }),
    "AUTH_FAILED",
  );
  await assertRejectsCode(serving, "AUTH_FAILED");
  listener.close();
  assert.equal(logs.length, 1);
  assert.match(logs[0].message, /^rejected connection from 127\.0\.0\.1:\d+ \(AUTH_FAILED\)/);
});

Deno.test("tcp: nobody listening is a retryable CONNECTION_LOST", async () => {
  const listener = tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
  const addr = listener.addr;
  listener.close();
  const error = await assertRejectsCode(tcpTransport.connect(addr), "CONNECTION_LOST");
  assert.ok(error.retryable);
});
