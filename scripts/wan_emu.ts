/**
 * A user-space WAN emulator: a TCP proxy (and, with `udp`, a UDP forwarder for QUIC) that adds
 * per-direction one-way delay, a bandwidth cap, a queue limit, bit-flip corruption, datagram
 * loss (UDP), and scheduled or seeded-random link cuts (abrupt reset or silent blackhole),
 * with byte and time counters. Library ({@linkcode WanEmu}) and
 * CLI (`deno run -A scripts/wan_emu.ts --help`); see `scripts/WAN_EMU.md`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Prng } from "../fixtures/prng.ts";
import { BitFlipper } from "./_bit_flipper.ts";
import { LinkShaper } from "./_link_shaper.ts";
import { type UdpCounters, UdpForwarder } from "./_udp_forwarder.ts";

/** One direction of the emulated link. */
export interface LinkDirection {
  /** One-way propagation delay, in ms. */
  delayMs: number;
  /** Bandwidth cap in bits per second; 0 = unlimited. */
  rateBitsPerSecond: number;
  /** Bytes the proxy holds in flight per connection before it stops reading (backpressure). */
  queueBytes: number;
  /** Probability that a byte gets one bit flipped, 0 to 1. */
  corruptPerByte: number;
  /** UDP only: probability that a datagram is lost, 0 to 1 (a TCP proxy cannot lose bytes). */
  lossPerPacket: number;
  /** UDP only: datagrams waiting for the link beyond these bytes are dropped (drop-tail). */
  udpQueueBytes: number;
}

/** How a cut behaves: `reset` closes every connection at once; `blackhole` goes silent. */
export type CutMode = "reset" | "blackhole";

/** A cut at a fixed time after start. */
export interface ScheduledCut {
  /** When, in ms after start. */
  atMs: number;
  /** How long the link stays down, in ms. */
  durationMs: number;
  /** What kind of cut. */
  mode: CutMode;
}

/** Options of {@linkcode WanEmu.start}. */
export interface WanEmuOptions {
  /** Where the proxy listens (default 127.0.0.1, a free port). */
  listen?: { hostname: string; port: number };
  /** Where it forwards to. */
  target: { hostname: string; port: number };
  /** Client → server direction. */
  up?: Partial<LinkDirection>;
  /** Server → client direction. */
  down?: Partial<LinkDirection>;
  /** Cap each connection separately instead of sharing one link (models a per-flow limit). */
  perConnectionRate?: boolean;
  /** Cuts at fixed times. */
  cuts?: ScheduledCut[];
  /** Random cuts: exponential gaps and durations with these means, drawn from `seed`. */
  randomCuts?: { meanIntervalMs: number; meanDurationMs: number; mode: CutMode };
  /** Seed of corruption, losses and random cuts (default 1). */
  seed?: number;
  /**
   * Flip one bit (bit 0) of byte `byteOffset` of the first connection, in one direction: to
   * damage a handshake record on purpose. Later connections pass untouched.
   */
  flipFirstConnection?: { direction: "up" | "down"; byteOffset: number };
  /**
   * Also forward UDP (for QUIC) on the same port number, through the same link (shared rate
   * cap, same cuts). Needs `--unstable-net`.
   */
  udp?: boolean;
}

/** Counters of one direction. */
export interface DirectionCounters {
  /** Bytes read from the sender. */
  bytesIn: number;
  /** Bytes delivered to the receiver. */
  bytesOut: number;
  /** Bits flipped. */
  bitsFlipped: number;
}

/** Counters of the whole emulator. */
export interface WanCounters {
  /** Client → server. */
  up: DirectionCounters;
  /** Server → client. */
  down: DirectionCounters;
  /** Connections accepted. */
  connections: number;
  /** Cuts begun. */
  cuts: number;
  /** Ms since start. */
  elapsedMs: number;
  /** UDP datagram counters per direction, when UDP is forwarded. */
  udp?: { up: UdpCounters; down: UdpCounters };
}

const DEFAULT_DIRECTION: LinkDirection = {
  delayMs: 0,
  rateBitsPerSecond: 0,
  queueBytes: 8 << 20,
  corruptPerByte: 0,
  lossPerPacket: 0,
  udpQueueBytes: 1 << 20,
};
const READ_BYTES = 16384;

interface Held {
  bytes: Uint8Array | null; // null = the sender closed its side
  deliverAtMs: number;
}

/**
 * A running emulator. Every socket and timer it made is released by `close()`.
 *
 * @example
 * ```ts ignore
 * const emu = WanEmu.start({ target: { hostname: "127.0.0.1", port: 4433 }, up: { delayMs: 10 } });
 * const conn = await Deno.connect(emu.addr);
 * emu.cut("blackhole");
 * await emu.close();
 * ```
 */
export class WanEmu {
  /** Where clients connect. */
  readonly addr: { hostname: string; port: number };
  readonly #options: WanEmuOptions;
  readonly #listener: Deno.Listener;
  readonly #up: LinkDirection;
  readonly #down: LinkDirection;
  readonly #shared: [LinkShaper, LinkShaper];
  readonly #flippers: [BitFlipper, BitFlipper];
  readonly #counters = { up: counters(), down: counters() };
  readonly #started = performance.now();
  readonly #conns = new Set<Deno.Conn>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #wakers = new Set<() => void>();
  readonly #prng: Prng;
  readonly #udp: UdpForwarder | undefined;
  #connections = 0;
  #cuts = 0;
  #down_: CutMode | undefined;
  #closed = false;
  #tasks: Promise<unknown>[] = [];

  private constructor(options: WanEmuOptions) {
    this.#options = options;
    this.#up = { ...DEFAULT_DIRECTION, ...options.up };
    this.#down = { ...DEFAULT_DIRECTION, ...options.down };
    this.#shared = [shaper(this.#up), shaper(this.#down)];
    this.#prng = new Prng(options.seed ?? 1);
    this.#flippers = [
      new BitFlipper(new Prng(this.#prng.nextU32()), this.#up.corruptPerByte),
      new BitFlipper(new Prng(this.#prng.nextU32()), this.#down.corruptPerByte),
    ];
    const listen = options.listen ?? { hostname: "127.0.0.1", port: 0 };
    this.#listener = Deno.listen(listen);
    const addr = this.#listener.addr as Deno.NetAddr;
    this.addr = { hostname: addr.hostname, port: addr.port };
    if (options.udp) {
      const udpDir = (dir: LinkDirection, i: 0 | 1) => ({
        shaper: this.#shared[i],
        queueBytes: dir.udpQueueBytes,
        lossPerPacket: dir.lossPerPacket,
        flipper: this.#flippers[i],
      });
      this.#udp = new UdpForwarder(
        this.addr,
        options.target,
        [udpDir(this.#up, 0), udpDir(this.#down, 1)],
        { isCut: () => this.#down_ !== undefined, prng: new Prng(this.#prng.nextU32()) },
      );
    }
    for (const cut of options.cuts ?? []) {
      this.#after(cut.atMs, () => this.#cutFor(cut.mode, cut.durationMs));
    }
    if (options.randomCuts) this.#scheduleRandomCut();
    this.#tasks.push(this.#acceptLoop());
  }

  /** Starts listening at once; connections are forwarded to `options.target`. */
  static start(options: WanEmuOptions): WanEmu {
    return new WanEmu(options);
  }

  /** Where QUIC clients send (same host and port as `addr`), when `udp` was asked. */
  get udpAddr(): { hostname: string; port: number } | undefined {
    return this.#udp?.addr;
  }

  /** The current counters. */
  counters(): WanCounters {
    const copy = (c: DirectionCounters, i: number) => ({
      ...c,
      bitsFlipped: this.#flippers[i].flipped,
    });
    return {
      up: copy(this.#counters.up, 0),
      down: copy(this.#counters.down, 1),
      connections: this.#connections,
      cuts: this.#cuts,
      elapsedMs: performance.now() - this.#started,
      udp: this.#udp && { up: { ...this.#udp.counters[0] }, down: { ...this.#udp.counters[1] } },
    };
  }

  /** True while a cut is in force. */
  get isCut(): boolean {
    return this.#down_ !== undefined;
  }

  /**
   * Cuts the link until {@linkcode WanEmu.restore}. `reset` closes every open connection at
   * once (peers see the end of input, then errors; Deno cannot send a TCP RST) and refuses
   * new ones; `blackhole` forwards nothing either way and keeps the connections open, so
   * only timeouts can tell. UDP datagrams are dropped either way; `reset` also forgets the
   * UDP flows.
   */
  cut(mode: CutMode): void {
    this.#cuts++;
    this.#down_ = mode;
    if (mode === "reset") {
      for (const conn of [...this.#conns]) this.#drop(conn);
      this.#udp?.resetFlows();
    }
  }

  /** Ends a cut: bytes held during a blackhole flow again, new connections are accepted. */
  restore(): void {
    this.#down_ = undefined;
    this.#wake();
  }

  /** Stops listening and closes every connection and timer. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#udp?.close();
    for (const conn of [...this.#conns]) this.#drop(conn);
    this.#wake();
    await Promise.allSettled(this.#tasks);
  }

  #cutFor(mode: CutMode, durationMs: number): void {
    this.cut(mode);
    this.#after(durationMs, () => this.restore());
  }

  #scheduleRandomCut(): void {
    const random = this.#options.randomCuts!;
    const exp = (mean: number) => -Math.log((this.#prng.nextU32() + 1) / 0x1_0000_0001) * mean;
    this.#after(exp(random.meanIntervalMs), () => {
      this.#cutFor(random.mode, exp(random.meanDurationMs));
      this.#scheduleRandomCut();
    });
  }

  #after(ms: number, fn: () => void): void {
    if (this.#closed) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#closed) fn();
    }, Math.max(0, ms));
    this.#timers.add(timer);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#closed) return resolve();
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#wakers.delete(wake);
        resolve();
      }, Math.max(0, ms));
      const wake = () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        resolve();
      };
      this.#timers.add(timer);
      this.#wakers.add(wake);
    });
  }

  /** Waits for any change (new data, restore, close). */
  #waitChange(): Promise<void> {
    return new Promise((resolve) => this.#wakers.add(resolve));
  }

  #wake(): void {
    const wakers = [...this.#wakers];
    this.#wakers.clear();
    for (const wake of wakers) wake();
  }

  #drop(conn: Deno.Conn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch { /* already closed */ }
    this.#wake();
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closed) {
      let client: Deno.Conn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      this.#connections++;
      if (this.#down_ === "reset") {
        client.close();
        continue;
      }
      this.#conns.add(client);
      this.#tasks.push(this.#forward(client, this.#connections));
    }
  }

  async #forward(client: Deno.Conn, connection: number): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect(this.#options.target);
    } catch {
      this.#drop(client);
      return;
    }
    this.#conns.add(server);
    const perConn = this.#options.perConnectionRate;
    const shapers = perConn ? [shaper(this.#up), shaper(this.#down)] : this.#shared;
    const pair = [client, server];
    const end = () => pair.forEach((c) => this.#drop(c));
    await Promise.allSettled([
      this.#pipe(client, server, this.#up, shapers[0], 0, pair, connection).catch(end),
      this.#pipe(server, client, this.#down, shapers[1], 1, pair, connection).catch(end),
    ]);
    end();
  }

  async #pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    dir: LinkDirection,
    link: LinkShaper,
    index: 0 | 1,
    pair: Deno.Conn[],
    connection: number,
  ): Promise<void> {
    const held: Held[] = [];
    let heldBytes = 0;
    let readerDone = false;
    const alive = () => !this.#closed && pair.every((c) => this.#conns.has(c));
    const count = index === 0 ? this.#counters.up : this.#counters.down;
    const flip = this.#options.flipFirstConnection;
    const flipAt = flip && flip.direction === (index === 0 ? "up" : "down") && connection === 1
      ? flip.byteOffset
      : -1;
    let streamOffset = 0;
    const reader = async () => {
      while (alive()) {
        if (heldBytes >= dir.queueBytes || this.#down_ !== undefined) {
          await this.#waitChange();
          continue;
        }
        const buffer = new Uint8Array(READ_BYTES);
        const n = await from.read(buffer);
        if (!alive()) break;
        const now = performance.now();
        if (n === null) {
          held.push({ bytes: null, deliverAtMs: now + link.delayMs });
          this.#wake();
          break;
        }
        const bytes = buffer.subarray(0, n);
        const target = flipAt - streamOffset;
        if (target >= 0 && target < n) bytes[target] ^= 1;
        streamOffset += n;
        count.bytesIn += n;
        this.#flippers[index].apply(bytes);
        held.push({ bytes, deliverAtMs: link.schedule(n, now) });
        heldBytes += n;
        this.#wake();
      }
      readerDone = true;
    };
    const writer = async () => {
      while (alive()) {
        const head = held[0];
        if (head === undefined || this.#down_ !== undefined) {
          if (readerDone && head === undefined) return;
          await this.#waitChange();
          continue;
        }
        const wait = head.deliverAtMs - performance.now();
        if (wait > 0.5) {
          await this.#sleep(wait);
          continue;
        }
        held.shift();
        if (head.bytes === null) {
          await (to as Deno.TcpConn).closeWrite();
          return;
        }
        heldBytes -= head.bytes.length;
        this.#wake();
        let offset = 0;
        while (offset < head.bytes.length) offset += await to.write(head.bytes.subarray(offset));
        count.bytesOut += head.bytes.length;
      }
    };
    await Promise.all([reader(), writer()]);
  }
}

function counters(): DirectionCounters {
  return { bytesIn: 0, bytesOut: 0, bitsFlipped: 0 };
}

function shaper(dir: LinkDirection): LinkShaper {
  return new LinkShaper(dir.delayMs, dir.rateBitsPerSecond);
}

function hostPort(text: string): { hostname: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`expected HOST:PORT: received "${text}"`);
  }
  return { hostname: text.slice(0, at) || "127.0.0.1", port };
}

function cutSpec(text: string): ScheduledCut {
  const [at, duration, mode] = text.split(":");
  if (mode !== "reset" && mode !== "blackhole") {
    throw new Error(`expected AT_MS:DURATION_MS:reset|blackhole: received "${text}"`);
  }
  return { atMs: Number(at), durationMs: Number(duration), mode };
}

const HELP = `wan_emu: a user-space WAN emulator (TCP proxy, optionally UDP forwarder)

  deno run -A scripts/wan_emu.ts --listen 127.0.0.1:9000 --target 127.0.0.1:4433 \\
    --delay-ms 75 --rate-mbit 100 [options]

  --listen HOST:PORT        where to listen (default 127.0.0.1:0, printed)
  --target HOST:PORT        where to forward (required)
  --delay-ms MS             one-way delay, both directions (RTT = 2 x MS)
  --up-delay-ms, --down-delay-ms MS     per direction (up = client to server)
  --rate-mbit MBIT          bandwidth cap, both directions (0 = none)
  --up-rate-mbit, --down-rate-mbit MBIT
  --per-connection-rate     cap each connection instead of sharing one link
  --queue-bytes N           bytes held per connection and direction (default 8 MiB)
  --corrupt-per-byte P      probability of one bit flip per byte
  --udp                     also forward UDP (QUIC) on the same port (needs --unstable-net)
  --loss P                  UDP: probability that a datagram is lost
  --udp-queue-bytes N       UDP: drop-tail queue at the bottleneck (default 1 MiB)
  --cut AT:DUR:MODE         cut at AT ms for DUR ms; MODE reset|blackhole (repeatable)
  --random-cuts MEAN:DUR:MODE  random cuts, exponential gaps/durations with these means
  --seed N                  seed of corruption and random cuts (default 1)
  --stats-every-ms MS       print counters as JSON lines (default 5000)
`;

function main(args: string[]): void {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "127.0.0.1:0" },
      target: { type: "string" },
      "delay-ms": { type: "string", default: "0" },
      "up-delay-ms": { type: "string" },
      "down-delay-ms": { type: "string" },
      "rate-mbit": { type: "string", default: "0" },
      "up-rate-mbit": { type: "string" },
      "down-rate-mbit": { type: "string" },
      "per-connection-rate": { type: "boolean", default: false },
      "queue-bytes": { type: "string", default: String(DEFAULT_DIRECTION.queueBytes) },
      "corrupt-per-byte": { type: "string", default: "0" },
      udp: { type: "boolean", default: false },
      loss: { type: "string", default: "0" },
      "udp-queue-bytes": { type: "string", default: String(DEFAULT_DIRECTION.udpQueueBytes) },
      cut: { type: "string", multiple: true, default: [] },
      "random-cuts": { type: "string" },
      seed: { type: "string", default: "1" },
      "stats-every-ms": { type: "string", default: "5000" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help || values.target === undefined) {
    console.log(HELP);
    if (!values.help) Deno.exit(2);
    return;
  }
  const direction = (prefix: "up" | "down"): Partial<LinkDirection> => ({
    delayMs: Number(values[`${prefix}-delay-ms`] ?? values["delay-ms"]),
    rateBitsPerSecond: Number(values[`${prefix}-rate-mbit`] ?? values["rate-mbit"]) * 1e6,
    queueBytes: Number(values["queue-bytes"]),
    corruptPerByte: Number(values["corrupt-per-byte"]),
    lossPerPacket: Number(values.loss),
    udpQueueBytes: Number(values["udp-queue-bytes"]),
  });
  const random = values["random-cuts"] ? cutSpec(values["random-cuts"]) : undefined;
  const emu = WanEmu.start({
    listen: hostPort(values.listen),
    target: hostPort(values.target),
    up: direction("up"),
    down: direction("down"),
    perConnectionRate: values["per-connection-rate"],
    cuts: values.cut.map(cutSpec),
    randomCuts: random &&
      { meanIntervalMs: random.atMs, meanDurationMs: random.durationMs, mode: random.mode },
    seed: Number(values.seed),
    udp: values.udp,
  });
  console.log(
    JSON.stringify({
      event: "listening",
      ...emu.addr,
      udp: emu.udpAddr !== undefined,
      target: values.target,
    }),
  );
  setInterval(
    () => console.log(JSON.stringify({ event: "counters", ...emu.counters() })),
    Number(values["stats-every-ms"]),
  );
}

if (import.meta.main) main(Deno.args);
