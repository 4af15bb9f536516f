import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Prng } from "../../fixtures/prng.ts";
import { Priority, Session } from "../../agent/wire/mod.ts";
import type { TransportAddress } from "../../agent/wire/transport.ts";
import { WanEmu } from "../../scripts/wan_emu.ts";
import { hasOpenssl, makeTestCerts } from "../../fixtures/test_certs.ts";
import { quicAvailable, quicTransport } from "./mod.ts";

const PSK = new Uint8Array(32).fill(6);
const quiet = { psk: PSK, logger: () => {} };
const LOOPBACK = { hostname: "127.0.0.1", port: 0 };
const ignore = !quicAvailable() || !hasOpenssl();
if (ignore) {
  console.warn(
    "transport-quic tests SKIPPED: " +
      (hasOpenssl() ? "run with --unstable-net (Deno's QUIC API)" : "openssl is not installed"),
  );
}
const certs = ignore ? undefined : await makeTestCerts();

async function transfer(via: (addr: TransportAddress) => TransportAddress, bytes: number) {
  const server = quicTransport({ cert: certs!.certPem, key: certs!.keyPem });
  const client = quicTransport({ caCerts: [certs!.caPem], serverName: "localhost" });
  const listener = server.listen(LOOPBACK);
  const [c, s] = await Promise.all([
    client.connect(via(listener.addr)).then((ch) => Session.connect(ch, quiet)),
    listener.accept().then((ch) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  const data = new Prng(bytes).fill(new Uint8Array(bytes));
  const sending = (async () => {
    const writer = c.openStream(Priority.BULK).writable.getWriter();
    for (let offset = 0; offset < bytes; offset += 65536) {
      await writer.write(data.subarray(offset, offset + 65536));
    }
    await writer.close();
  })();
  const got = new Uint8Array(bytes);
  let filled = 0;
  for await (const chunk of (await s.acceptStream())!.readable) {
    got.set(chunk, filled);
    filled += chunk.length;
  }
  await sending;
  assert.equal(filled, bytes);
  assertBytesEqual(got, data, "the stream's bytes");
  assert.ok((await c.ping()) >= 0);
  await c.close();
  await s.closed;
  await c.closed;
}

Deno.test(
  { name: "quic: a session carries a stream intact over one QUIC stream", ignore },
  async () => {
    await transfer((addr) => addr, 4 << 20);
  },
);

Deno.test(
  { name: "quic: a server from another CA is refused with PEER_UNTRUSTED", ignore },
  async () => {
    const listener = quicTransport({ cert: certs!.certPem, key: certs!.keyPem }).listen(LOOPBACK);
    const client = quicTransport({ caCerts: [certs!.otherCaPem], serverName: "localhost" });
    await assertRejectsCode(client.connect(listener.addr), "PEER_UNTRUSTED");
    listener.close();
  },
);

Deno.test(
  { name: "quic: through the emulator's UDP side with 2% loss, data arrives intact", ignore },
  async () => {
    let emu: WanEmu | undefined;
    try {
      await transfer((addr) => {
        emu = WanEmu.start({
          target: addr,
          udp: true,
          up: { delayMs: 5, rateBitsPerSecond: 50e6, lossPerPacket: 0.02 },
          down: { delayMs: 5, lossPerPacket: 0.02 },
          seed: 7,
        });
        return emu.udpAddr!;
      }, 1 << 20);
      const udp = emu!.counters().udp!;
      assert.ok(udp.up.packetsDropped > 0, "the emulator dropped datagrams");
    } finally {
      await emu?.close();
    }
  },
);
