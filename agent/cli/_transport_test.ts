import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { memoryChannelPair, Session } from "../wire/mod.ts";
import { sessionOptionsFromFlags } from "./_transport.ts";

const PSK = new Uint8Array(32).fill(3);

for (const seconds of ["1", "1.5", "2", "4", "5", "7", "10", "3600"]) {
  Deno.test(`--idle-timeout ${seconds}: a session comes up and answers a ping`, async () => {
    const timing = sessionOptionsFromFlags({ "idle-timeout": seconds });
    assert.equal(timing.idleTimeoutMs, Math.round(Number(seconds) * 1000));
    assert.ok(Number.isInteger(timing.keepaliveIntervalMs));
    assert.ok(timing.keepaliveIntervalMs! < timing.idleTimeoutMs!);
    const options = { ...timing, psk: PSK, logger: () => {} };
    const [a, b] = memoryChannelPair();
    const [client, server] = await Promise.all([
      Session.connect(a, options),
      Session.accept(b, options),
    ]);
    assert.ok((await client.ping()) >= 0);
    await client.close();
    await server.closed;
  });
}

Deno.test("--idle-timeout outside 1 to 3600 seconds is a startup error naming the flag", () => {
  for (const text of ["0", "0.5", "3601", "ten", ""]) {
    const error = assertThrowsCode(
      () => sessionOptionsFromFlags({ "idle-timeout": text }),
      "INVALID_ARGUMENT",
    );
    assert.match(error.message, /--idle-timeout must be 1 to 3600 seconds/);
  }
});
