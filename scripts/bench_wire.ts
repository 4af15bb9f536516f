/**
 * Goodput of the session layer through the WAN emulator, against a plain TCP copy through
 * the same emulator (the baseline), at two settings: the 100 Mbit/s × 150 ms RTT, and
 * a long fat link (default 1 Gbit/s × 150 ms) where each connection is held to a per-flow
 * window (the emulator's per-connection queue), as one TCP flow's window would hold it.
 * Rows: one session over tcp, striped over N tcp connections, tls with a pinned self-signed
 * certificate (the product default: node:tls on the client), tls trusting a CA (Deno's TLS on
 * both ends), and quic (through the emulator's UDP side). Plus memory per idle session. Prints markdown tables.
 *
 *   deno run -A --unstable-net scripts/bench_wire.ts [--mbytes 40] [--rate-mbit 100]
 *     [--rtt-ms 150] [--high-rate-mbit 1000] [--high-mbytes 100] [--flow-window-mib 4]
 *     [--members 4] [--only TEXT]   (rows whose name contains TEXT, beside the baseline)
 *     [--rounds 1]   (each round runs every row once, in turn; tables give medians)
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ByteChannel,
  memoryChannelPair,
  Priority,
  Session,
  type SessionOptions,
  type Transport,
} from "../agent/wire/mod.ts";
import { stripedTransport } from "../agent/wire/striped_transport.ts";
import { tcpTransport } from "../plugins/transport-tcp/mod.ts";
import { hasOpenssl, makeTestCerts } from "../fixtures/test_certs.ts";
import {
  certificateFingerprint,
  createSelfSignedCertificate,
  tlsTransport,
} from "../plugins/transport-tls/mod.ts";
import { quicAvailable, quicTransport } from "../plugins/transport-quic/mod.ts";
import { WanEmu } from "./wan_emu.ts";

const PSK = crypto.getRandomValues(new Uint8Array(32));
const CHUNK = 65536;

/** One emulated link and the session windows used on it. */
interface Setting {
  rateMbit: number;
  rttMs: number;
  /** Bytes the emulator holds per connection and direction (a per-flow window). */
  queueBytes: number;
  /** Session stream and connection windows, in bytes. */
  windowBytes: number;
  bytes: number;
}

interface Row {
  name: string;
  /** Seconds of each round. */
  seconds: number[];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function emulator(target: { hostname: string; port: number }, s: Setting, udp = false) {
  const dir = {
    delayMs: s.rttMs / 2,
    rateBitsPerSecond: s.rateMbit * 1e6,
    queueBytes: s.queueBytes,
    // UDP bottleneck queue: one bandwidth-delay product, like a well-sized router buffer.
    udpQueueBytes: Math.max(1 << 20, (s.rateMbit * 1e6 / 8) * (s.rttMs / 1000)),
  };
  return WanEmu.start({ target, up: dir, down: dir, udp });
}

async function plainTcp(s: Setting): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const emu = emulator(listener.addr as Deno.NetAddr, s);
  const receiving = listener.accept().then(async (conn) => {
    let got = 0;
    for await (const chunk of conn.readable) got += chunk.length;
    return got;
  });
  const conn = await Deno.connect(emu.addr);
  const started = performance.now();
  const chunk = new Uint8Array(CHUNK);
  for (let sent = 0; sent < s.bytes; sent += CHUNK) {
    for (let offset = 0; offset < CHUNK;) offset += await conn.write(chunk.subarray(offset));
  }
  await conn.closeWrite();
  const got = await receiving;
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  listener.close();
  await emu.close();
  if (got !== s.bytes) throw new Error(`plain TCP delivered ${got} of ${s.bytes} bytes`);
  return seconds;
}

async function overSession(
  client: Transport,
  server: Transport,
  s: Setting,
  udp = false,
): Promise<number> {
  const options: SessionOptions = {
    psk: PSK,
    logger: () => {},
    streamWindowBytes: s.windowBytes,
    connectionWindowBytes: s.windowBytes,
  };
  const listener = server.listen({ hostname: "127.0.0.1", port: 0 });
  const emu = emulator(listener.addr, s, udp);
  const target = udp ? emu.udpAddr! : emu.addr;
  const accepting = (async () => {
    while (true) {
      const channel = await listener.accept();
      // A pinning client may first close a connection it only learned the certificate on.
      const session = await Session.accept(channel, options).catch(() => null);
      if (session) return session;
    }
  })();
  const [c, srv] = await Promise.all([
    client.connect(target).then((ch: ByteChannel) => Session.connect(ch, options)),
    accepting,
  ]);
  listener.close();
  const receiving = srv.acceptStream().then(async (stream) => {
    let got = 0;
    for await (const chunk of stream!.readable) got += chunk.length;
    return got;
  });
  const started = performance.now();
  const writer = c.openStream(Priority.BULK).writable.getWriter();
  const chunk = new Uint8Array(CHUNK);
  for (let sent = 0; sent < s.bytes; sent += CHUNK) await writer.write(chunk);
  await writer.close();
  const got = await receiving;
  const seconds = (performance.now() - started) / 1000;
  await c.close();
  await srv.closed;
  await emu.close();
  if (got !== s.bytes) throw new Error(`session delivered ${got} of ${s.bytes} bytes`);
  return seconds;
}

async function memoryPerSession(count: number): Promise<number> {
  const quiet = { psk: PSK, logger: () => {} };
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

/**
 * One row per transfer: the median of its rounds' seconds and goodput, the ratio of that median
 * to the baseline's, and (with several rounds) the median and range of the per-round ratios
 * (each round's baseline ran just before the row, so the load of the moment cancels out).
 */
function printTable(title: string, s: Setting, rows: Row[]): void {
  const mbit = (seconds: number) => (s.bytes * 8) / seconds / 1e6;
  const baseline = rows[0];
  const rounds = baseline.seconds.length;
  console.log(
    `\n${title}: ${(s.bytes / 1e6).toFixed(0)} MB at ${s.rateMbit} Mbit/s, ` +
      `${s.rttMs} ms RTT, emulator queue ${(s.queueBytes / 2 ** 20).toFixed(0)} MiB per ` +
      `connection and direction, session windows ${(s.windowBytes / 2 ** 20).toFixed(0)} MiB; ` +
      `median of ${rounds} round(s)\n`,
  );
  console.log(
    "| transfer | seconds | goodput Mbit/s | vs baseline | per-round ratio, median (min–max) |",
  );
  console.log("|---|---:|---:|---:|---:|");
  for (const r of rows) {
    const ratios = r.seconds.map((sec, i) => baseline.seconds[i] / sec);
    const seconds = median(r.seconds);
    console.log(
      `| ${r.name} | ${seconds.toFixed(2)} | ${mbit(seconds).toFixed(1)} | ` +
        `${(median(baseline.seconds) / seconds).toFixed(2)}× | ${median(ratios).toFixed(2)}× ` +
        `(${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) |`,
    );
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mbytes: { type: "string", default: "40" },
      "rate-mbit": { type: "string", default: "100" },
      "rtt-ms": { type: "string", default: "150" },
      "high-rate-mbit": { type: "string", default: "1000" },
      "high-mbytes": { type: "string", default: "100" },
      "flow-window-mib": { type: "string", default: "4" },
      members: { type: "string", default: "4" },
      only: { type: "string" },
      rounds: { type: "string", default: "1" },
    },
  });
  const only = values.only;
  const round = (mb: string) => Math.ceil((Number(mb) * 1e6) / CHUNK) * CHUNK;
  const members = Number(values.members);
  const rtt = Number(values["rtt-ms"]);
  const wan: Setting = {
    rateMbit: Number(values["rate-mbit"]),
    rttMs: rtt,
    queueBytes: 16 << 20,
    windowBytes: 4 << 20,
    bytes: round(values.mbytes),
  };
  const high: Setting = {
    rateMbit: Number(values["high-rate-mbit"]),
    rttMs: rtt,
    queueBytes: Number(values["flow-window-mib"]) * 2 ** 20,
    windowBytes: 64 << 20,
    bytes: round(values["high-mbytes"]),
  };
  const striped = stripedTransport(tcpTransport, { psk: PSK, members, logger: () => {} });
  const certs = hasOpenssl() ? await makeTestCerts() : undefined;
  const quic = certs && quicAvailable();
  if (!certs) console.warn("openssl missing: tls and quic rows skipped");
  else if (!quic) console.warn("QUIC unavailable (run with --unstable-net): quic rows skipped");

  const rounds = Number(values.rounds);
  const run = async (s: Setting, withSecure: boolean): Promise<Row[]> => {
    const rows: Row[] = [];
    for (let round = 0; round < rounds; round++) await runRound(s, withSecure, rows);
    return rows;
  };
  const runRound = async (s: Setting, withSecure: boolean, rows: Row[]): Promise<void> => {
    const add = (name: string, seconds: number) => {
      const row = rows.find((r) => r.name === name);
      if (row) row.seconds.push(seconds);
      else rows.push({ name, seconds: [seconds] });
    };
    const row = async (name: string, measure: () => Promise<number>) => {
      if (only === undefined || name.includes(only)) add(name, await measure());
    };
    add("plain TCP copy (baseline)", await plainTcp(s));
    await row("session over tcp, 1 connection", () => overSession(tcpTransport, tcpTransport, s));
    await row(`session over tcp striped × ${members}`, () => overSession(striped, striped, s));
    if (withSecure) {
      // The product default: serve's self-signed certificate, pinned by the agent (node:tls).
      const own = await createSelfSignedCertificate();
      const pin = await certificateFingerprint(own.certPem);
      await row("session over tls (pinned, the default)", () =>
        overSession(
          tlsTransport({ pinSha256: pin }),
          tlsTransport({ cert: own.certPem, key: own.keyPem }),
          s,
        ));
    }
    if (withSecure && certs) {
      const tlsServer = tlsTransport({ cert: certs.certPem, key: certs.keyPem });
      const tlsClient = tlsTransport({ caCerts: [certs.caPem] });
      await row("session over tls (CA)", () => overSession(tlsClient, tlsServer, s));
      if (quic) {
        const quicServer = quicTransport({ cert: certs.certPem, key: certs.keyPem });
        const quicClient = quicTransport({ caCerts: [certs.caPem], serverName: "localhost" });
        await row(
          "session over quic (UDP)",
          () => overSession(quicClient, quicServer, s, true),
        );
      }
    }
  };
  printTable("WAN", wan, await run(wan, true));
  if (high.bytes > 0) {
    printTable("Long fat link, per-flow window", high, await run(high, true));
  }
  const perSession = await memoryPerSession(50);
  console.log(
    `\nheap per idle session (50 pairs, both ends counted): ${(perSession / 1024).toFixed(1)} KiB`,
  );
}

if (import.meta.main) await main();
