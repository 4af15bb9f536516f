import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { SocketWriter } from "./_socket_writer.ts";

Deno.test("socket writer: writes arrive whole and in order; close() ends the peer's reading", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-socket-writer-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
  const [client, server] = await Promise.all([
    Deno.connect({ transport: "unix", path: `${dir}/s.sock` }),
    listener.accept(),
  ]);
  listener.close();
  try {
    const writer = new SocketWriter(server);
    const data = new Uint8Array(2 * 1024 * 1024).map((_, i) => i * 7);
    const reading = new Response(client.readable).bytes();
    // Larger than the socket buffer: partial writes are continued.
    await writer.write(data.subarray(0, 1000));
    await writer.write(data.subarray(1000));
    await writer.close();
    assertBytesEqual(await reading, data, "what the peer read");
  } finally {
    server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
