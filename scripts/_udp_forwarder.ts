import type { Prng } from "../fixtures/prng.ts";
import type { BitFlipper } from "./_bit_flipper.ts";
import type { LinkShaper } from "./_link_shaper.ts";

/** What the UDP side of one direction does to each datagram. */
export interface UdpDirection {
  /** Shapes delay and rate (shared with the TCP side: one link). */
  shaper: LinkShaper;
  /** Datagrams waiting for the link beyond this many bytes are dropped (drop-tail). */
  queueBytes: number;
  /** Probability that a datagram is lost, 0 to 1. */
  lossPerPacket: number;
  /** Flips bits (QUIC then drops the packet: its AEAD fails). */
  flipper: BitFlipper;
}

/** Counters of one direction of the UDP side. */
export interface UdpCounters {
  /** Datagrams received from the sender. */
  packetsIn: number;
  /** Datagrams delivered. */
  packetsOut: number;
  /** Datagrams dropped: random loss, a full queue, or a cut. */
  packetsDropped: number;
  /** Bytes delivered. */
  bytesOut: number;
}

interface Held {
  bytes: Uint8Array;
  deliverAtMs: number;
  to: Deno.DatagramConn;
  addr: Deno.NetAddr;
}

/** Environment the forwarder runs in: the emulator's cut state, seeded randomness, timers. */
export interface UdpHost {
  /** True while a cut is in force (every datagram is dropped). */
  isCut(): boolean;
  /** Seeded randomness for losses. */
  prng: Prng;
}

const MAX_FLOWS = 256;

/**
 * The UDP half of the WAN emulator: a datagram forwarder with per-direction delay, rate,
 * drop-tail queue, random loss, bit flips and cuts. Each client address gets its own
 * upstream socket (a "flow"), so the target sees one peer per client, as through a NAT.
 * Unlike the TCP proxy it can lose datagrams, so QUIC's own loss recovery and congestion
 * control do the work. Needs `--unstable-net` (`Deno.listenDatagram`).
 */
export class UdpForwarder {
  /** Where clients send. */
  readonly addr: { hostname: string; port: number };
  /** [up, down] counters. */
  readonly counters: [UdpCounters, UdpCounters] = [udpCounters(), udpCounters()];
  readonly #socket: Deno.DatagramConn;
  readonly #target: Deno.NetAddr;
  readonly #dirs: [UdpDirection, UdpDirection];
  readonly #host: UdpHost;
  readonly #flows = new Map<string, Deno.DatagramConn>();
  readonly #held: [Held[], Held[]] = [[], []];
  readonly #timers: (ReturnType<typeof setTimeout> | undefined)[] = [undefined, undefined];
  #closed = false;

  constructor(
    listen: { hostname: string; port: number },
    target: { hostname: string; port: number },
    dirs: [UdpDirection, UdpDirection],
    host: UdpHost,
  ) {
    this.#socket = Deno.listenDatagram({ transport: "udp", ...listen });
    const addr = this.#socket.addr as Deno.NetAddr;
    this.addr = { hostname: addr.hostname, port: addr.port };
    this.#target = { transport: "udp", ...target };
    this.#dirs = dirs;
    this.#host = host;
    this.#receiveLoop(this.#socket, 0, undefined);
  }

  /** Forgets every flow (after a `reset` cut the peers must start over, as after a NAT reboot). */
  resetFlows(): void {
    for (const flow of this.#flows.values()) flow.close();
    this.#flows.clear();
  }

  /** Closes every socket and timer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    this.resetFlows();
    for (const timer of this.#timers) clearTimeout(timer);
  }

  async #receiveLoop(
    socket: Deno.DatagramConn,
    index: 0 | 1,
    client: Deno.NetAddr | undefined,
  ): Promise<void> {
    while (!this.#closed) {
      let bytes: Uint8Array;
      let from: Deno.NetAddr;
      try {
        const [data, addr] = await socket.receive();
        bytes = data;
        from = addr as Deno.NetAddr;
      } catch {
        return; // socket closed
      }
      if (index === 0) {
        const flow = this.#flow(from);
        if (flow) this.#enqueue(0, bytes, flow, this.#target);
      } else {
        this.#enqueue(1, bytes, this.#socket, client!);
      }
    }
  }

  #flow(client: Deno.NetAddr): Deno.DatagramConn | undefined {
    const key = `${client.hostname}|${client.port}`;
    let flow = this.#flows.get(key);
    if (flow === undefined) {
      if (this.#flows.size >= MAX_FLOWS) return undefined;
      const hostname = this.#target.hostname.includes(":") ? "::" : "0.0.0.0";
      flow = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
      this.#flows.set(key, flow);
      this.#receiveLoop(flow, 1, client);
    }
    return flow;
  }

  #enqueue(index: 0 | 1, bytes: Uint8Array, to: Deno.DatagramConn, addr: Deno.NetAddr): void {
    const dir = this.#dirs[index];
    const count = this.counters[index];
    count.packetsIn++;
    const now = performance.now();
    const lost = dir.lossPerPacket > 0 &&
      this.#host.prng.nextU32() / 0x1_0000_0000 < dir.lossPerPacket;
    if (this.#host.isCut() || lost || dir.shaper.backlogBytes(now) > dir.queueBytes) {
      count.packetsDropped++;
      return;
    }
    dir.flipper.apply(bytes);
    this.#held[index].push({
      bytes,
      deliverAtMs: dir.shaper.schedule(bytes.length, now),
      to,
      addr,
    });
    if (this.#held[index].length === 1) this.#arm(index);
  }

  #arm(index: 0 | 1): void {
    const head = this.#held[index][0];
    if (head === undefined || this.#closed) return;
    clearTimeout(this.#timers[index]);
    this.#timers[index] = setTimeout(
      () => this.#deliver(index),
      Math.max(0, head.deliverAtMs - performance.now()),
    );
  }

  #deliver(index: 0 | 1): void {
    this.#timers[index] = undefined;
    const held = this.#held[index];
    const now = performance.now();
    const count = this.counters[index];
    while (held.length > 0 && held[0].deliverAtMs <= now + 0.5) {
      const item = held.shift()!;
      if (this.#host.isCut()) {
        count.packetsDropped++;
        continue;
      }
      item.to.send(item.bytes, item.addr).then(() => {
        count.packetsOut++;
        count.bytesOut += item.bytes.length;
      }, () => count.packetsDropped++);
    }
    this.#arm(index);
  }
}

function udpCounters(): UdpCounters {
  return { packetsIn: 0, packetsOut: 0, packetsDropped: 0, bytesOut: 0 };
}
