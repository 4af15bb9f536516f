/**
 * Goodput of the session layer through the WAN emulator, against a plain TCP copy through
 * the same emulator (the baseline), plus memory per idle session. Prints a markdown table.
 *
 *   deno run -A scripts/bench_wire.ts [--mbytes 40] [--rate-mbit 100] [--rtt-ms 150]
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ByteChannel,
  memoryChannelPair,
  Priority,
  Session,
  type Transport,
} from "../agent/wire/mod.ts";
import { tcpTransport } from "../plugins/transport-tcp/mod.ts";
import { hasOpenssl, makeTestCerts } from "../plugins/transport-tls/_test_certs.ts";
import { tlsTransport } from "../plugins/transport-tls/mod.ts";
import { WanEmu } from "./wan_emu.ts";

const PSK = crypto.getRandomValues(new Uint8Array(32));
const quiet = { psk: PSK, logger: () => {} };
const CHUNK = 65536;

interface Row {
  name: string;
  seconds: number;
  mbitPerSecond: number;
}

function emulator(target: { hostname: string; port: number }, rateMbit: number, rttMs: number) {
  const dir = { delayMs: rttMs / 2, rateBitsPerSecond: rateMbit * 1e6, queueBytes: 16 << 20 };
  return WanEmu.start({ target, up: dir, down: dir });
}

async function plainTcp(bytes: number, rateMbit: number, rttMs: number): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const emu = emulator(listener.addr as Deno.NetAddr, rateMbit, rttMs);
  const receiving = listener.accept().then(async (conn) => {
    let got = 0;
    for await (const chunk of conn.readable) got += chunk.length;
    return got;
  });
  const conn = await Deno.connect(emu.addr);
  const started = performance.now();
  const chunk = new Uint8Array(CHUNK);
  for (let sent = 0; sent < bytes; sent += CHUNK) {
    for (let offset = 0; offset < CHUNK;) offset += await conn.write(chunk.subarray(offset));
  }
  await conn.closeWrite();
  const got = await receiving;
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  listener.close();
  await emu.close();
  if (got !== bytes) throw new Error(`plain TCP delivered ${got} of ${bytes} bytes`);
  return seconds;
}

async function overSession(
  transport: Transport,
  listen: Transport,
  bytes: number,
  rateMbit: number,
  rttMs: number,
): Promise<number> {
  const listener = listen.listen({ hostname: "127.0.0.1", port: 0 });
  const emu = emulator(listener.addr, rateMbit, rttMs);
  const [client, server] = await Promise.all([
    transport.connect(emu.addr).then((ch: ByteChannel) => Session.connect(ch, quiet)),
    listener.accept().then((ch: ByteChannel) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  const receiving = server.acceptStream().then(async (stream) => {
    let got = 0;
    for await (const chunk of stream!.readable) got += chunk.length;
    return got;
  });
  const started = performance.now();
  const writer = client.openStream(Priority.BULK).writable.getWriter();
  const chunk = new Uint8Array(CHUNK);
  for (let sent = 0; sent < bytes; sent += CHUNK) await writer.write(chunk);
  await writer.close();
  const got = await receiving;
  const seconds = (performance.now() - started) / 1000;
  await client.close();
  await server.closed;
  await emu.close();
  if (got !== bytes) throw new Error(`session delivered ${got} of ${bytes} bytes`);
  return seconds;
}

async function memoryPerSession(count: number): Promise<number> {
  const before = Deno.memoryUsage().heapUsed;
  const sessions: Session[] = [];
  for (let i = 0; i < count; i++) {
    const [a, b] = memoryChannelPair();
    sessions.push(...await Promise.all([Session.connect(a, quiet), Session.accept(b, quiet)]));
  }
  const after = Deno.memoryUsage().heapUsed;
  for (const s of sessions) s.abort();
  return (after - before) / sessions.length;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mbytes: { type: "string", default: "40" },
      "rate-mbit": { type: "string", default: "100" },
      "rtt-ms": { type: "string", default: "150" },
    },
  });
  const bytes = Math.ceil((Number(values.mbytes) * 1e6) / CHUNK) * CHUNK;
  const rate = Number(values["rate-mbit"]);
  const rtt = Number(values["rtt-ms"]);
  const rows: Row[] = [];
  const add = (name: string, seconds: number) =>
    rows.push({ name, seconds, mbitPerSecond: (bytes * 8) / seconds / 1e6 });

  add("plain TCP copy (baseline)", await plainTcp(bytes, rate, rtt));
  add(
    "session over tcp, 1 bulk stream",
    await overSession(tcpTransport, tcpTransport, bytes, rate, rtt),
  );
  if (hasOpenssl()) {
    const certs = await makeTestCerts();
    const server = tlsTransport({ cert: certs.certPem, key: certs.keyPem });
    add(
      "session over tls (CA), 1 bulk stream",
      await overSession(tlsTransport({ caCerts: [certs.caPem] }), server, bytes, rate, rtt),
    );
  }
  const baseline = rows[0].mbitPerSecond;
  console.log(`\n${values.mbytes} MB through the emulator at ${rate} Mbit/s, ${rtt} ms RTT\n`);
  console.log("| transfer | seconds | goodput Mbit/s | vs baseline |");
  console.log("|---|---:|---:|---:|");
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.seconds.toFixed(2)} | ${r.mbitPerSecond.toFixed(1)} | ` +
        `${(r.mbitPerSecond / baseline).toFixed(2)}× |`,
    );
  }
  const perSession = await memoryPerSession(50);
  console.log(
    `\nheap per idle session (50 pairs, both ends counted): ${(perSession / 1024).toFixed(1)} KiB`,
  );
}

if (import.meta.main) await main();
