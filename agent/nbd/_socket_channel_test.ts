import assert from "node:assert/strict";
import { seededTest } from "../../fixtures/seeded.ts";
import { SocketChannel } from "./_socket_channel.ts";

/** A connected unix socket pair in a fresh directory; dispose closes both and removes it. */
async function socketPair() {
  const dir = await Deno.makeTempDir({ prefix: "presync-socket-channel-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
  const [client, server] = await Promise.all([
    Deno.connect({ transport: "unix", path: `${dir}/s.sock` }),
    listener.accept(),
  ]);
  listener.close();
  return {
    client,
    server,
    async [Symbol.asyncDispose]() {
      for (const c of [client, server]) {
        try {
          c.close();
        } catch {
          // Closed by the test.
        }
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

seededTest(
  "socket channel: every chunk read stays intact while later reads fill the same slab",
  async (prng) => {
    await using pair = await socketPair();
    const channel = new SocketChannel(pair.server);
    const sent = prng.fill(new Uint8Array(3 * 1024 * 1024 + 12345));
    const writing = (async () => {
      for (let at = 0; at < sent.length;) {
        const piece = 1 + prng.int(100_000);
        await pair.client.write(sent.subarray(at, at + piece)).then((n) => (at += n));
      }
      pair.client.closeWrite();
    })();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const result = await channel.read();
      if (result.done) break;
      chunks.push(result.value); // kept, not copied: later reads must not overwrite it
    }
    await writing;
    const received = new Uint8Array(sent.length);
    let at = 0;
    for (const chunk of chunks) {
      received.set(chunk, at);
      at += chunk.length;
    }
    assert.equal(at, sent.length);
    assert.deepEqual(received, sent);
  },
);

Deno.test("socket channel: cancel() ends a pending read at once, and later reads", async () => {
  await using pair = await socketPair();
  const channel = new SocketChannel(pair.server);
  const pending = channel.read();
  await channel.cancel();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.deepEqual(await channel.read(), { done: true, value: undefined });
});

Deno.test("socket channel: writes arrive whole; close() ends the peer's reading", async () => {
  await using pair = await socketPair();
  const channel = new SocketChannel(pair.server);
  const data = new Uint8Array(2 * 1024 * 1024).map((_, i) => i * 7);
  const reading = new Response(pair.client.readable).bytes();
  await channel.write(data);
  await channel.close();
  assert.deepEqual(await reading, data);
});
