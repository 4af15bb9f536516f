import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Priority, Session } from "../../agent/wire/mod.ts";
import type { Transport } from "../../agent/wire/transport.ts";
import { WanEmu } from "../../scripts/wan_emu.ts";
import { hasOpenssl, makeTestCerts } from "../../fixtures/test_certs.ts";
import { certificateFingerprint, tlsTransport } from "./mod.ts";

const PSK = new Uint8Array(32).fill(5);
const quiet = { psk: PSK, logger: () => {} };
const ignore = !hasOpenssl();
if (ignore) console.warn("transport-tls tests SKIPPED: openssl is not installed");
const certs = ignore ? undefined : await makeTestCerts();

async function roundTrip(client: Transport): Promise<void> {
  const listener = tlsTransport({ cert: certs!.certPem, key: certs!.keyPem })
    .listen({ hostname: "127.0.0.1", port: 0 });
  const [c, s] = await Promise.all([
    client.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
    listener.accept().then((ch) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  const w = c.openStream(Priority.CONTROL).writable.getWriter();
  await w.write(new Uint8Array([1, 2, 3]));
  await w.close();
  const inbound = (await s.acceptStream())!;
  const { value } = await inbound.readable.getReader().read();
  assert.deepEqual(value, new Uint8Array([1, 2, 3]));
  await c.close();
  await s.closed;
}

Deno.test(
  { name: "tls: a client trusting the CA file gets a working session", ignore },
  async () => {
    await roundTrip(tlsTransport({ caCerts: [certs!.caPem] }));
  },
);

Deno.test({
  name: "tls: a client pinning the certificate fingerprint gets a working session",
  ignore,
}, async () => {
  await roundTrip(tlsTransport({ pinSha256: await certificateFingerprint(certs!.certPem) }));
});

async function refused(client: Transport): Promise<void> {
  const listener = tlsTransport({ cert: certs!.certPem, key: certs!.keyPem })
    .listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept().then(async (ch) => {
    await Session.accept(ch, quiet).catch(() => {});
  });
  await assertRejectsCode(client.connect(listener.addr), "PEER_UNTRUSTED");
  await accepted;
  listener.close();
}

Deno.test({ name: "tls: a wrong pin is refused with PEER_UNTRUSTED", ignore }, async () => {
  await refused(tlsTransport({ pinSha256: "00".repeat(32) }));
});

Deno.test(
  { name: "tls: a server from another CA is refused with PEER_UNTRUSTED", ignore },
  async () => {
    await refused(tlsTransport({ caCerts: [certs!.otherCaPem] }));
  },
);

Deno.test(
  { name: "tls: bits flipped in flight end the connection; no data is delivered", ignore },
  async () => {
    const client = tlsTransport({ caCerts: [certs!.caPem] });
    const listener = tlsTransport({ cert: certs!.certPem, key: certs!.keyPem })
      .listen({ hostname: "127.0.0.1", port: 0 });
    const emu = WanEmu.start({ target: listener.addr, up: { corruptPerByte: 1e-5 }, seed: 4 });
    const results = await Promise.allSettled([
      client.connect(emu.addr).then(async (ch) => {
        const session = await Session.connect(ch, quiet);
        const w = session.openStream(Priority.BULK).writable.getWriter();
        for (let i = 0; i < 64; i++) await w.write(new Uint8Array(65536).fill(7));
        await session.closed;
      }),
      listener.accept().then(async (ch) => {
        const session = await Session.accept(ch, quiet);
        const inbound = (await session.acceptStream())!;
        for await (const chunk of inbound.readable) assert.ok(chunk.every((b) => b === 7));
      }),
    ]);
    listener.close();
    await emu.close();
    assert.ok(results.every((r) => r.status === "rejected"), "both ends fail");
    assert.ok(emu.counters().up.bitsFlipped > 0);
  },
);
