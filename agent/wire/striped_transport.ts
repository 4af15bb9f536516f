import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { ChunkReader } from "./_chunk_reader.ts";
import { Signal } from "./_signal.ts";
import { clientHandshake, serverHandshake } from "./handshake.ts";
import type { SessionLogger } from "./session_logger.ts";
import { resolveSessionConfig, type SessionConfig } from "./session_options.ts";
import {
  decodeStripeJoin,
  encodeStripeJoin,
  STRIPE_GROUP_ID_BYTES,
  STRIPE_JOIN_BYTES,
  STRIPE_MAX_MEMBERS,
} from "./stripe_record.ts";
import {
  StripedChannel,
  type StripedChannelOptions,
  type StripeMember,
} from "./striped_channel.ts";
import {
  acceptUntilClosed,
  type ByteChannel,
  type Transport,
  type TransportAddress,
  type TransportListener,
} from "./transport.ts";

/** Options of {@linkcode stripedTransport}. */
export interface StripedTransportOptions extends StripedChannelOptions {
  /** The 32-byte pre-shared key; every member proves it before it may join. */
  psk: Uint8Array;
  /** Member connections a client opens per stripe, 1 to 16 (default 4). */
  members?: number;
  /** Time allowed for a member's handshake and for a whole stripe to gather, in ms (default 10,000). */
  handshakeTimeoutMs?: number;
  /** Where log lines go (rejected members, incomplete stripes). */
  logger?: SessionLogger;
  /** Stripes a listener gathers at once before it refuses more (default 64). */
  maxPendingStripes?: number;
}

interface Gathering {
  count: number;
  members: (StripeMember | undefined)[];
  joined: number;
  timer: ReturnType<typeof setTimeout>;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function closeAll(members: (StripeMember | undefined)[]): void {
  for (const member of members) member?.channel.close();
}

/**
 * Striping (`docs/PROTOCOL.md`, "Striping"): wraps a transport so that one
 * {@linkcode ByteChannel} runs over `members` parallel connections, to fill a long fat link
 * where one TCP flow's window cannot. Every member runs the pre-shared-key handshake and
 * then sends a JOIN naming its stripe, so a connection without the key never joins one. A
 * session then runs over the striped channel as over any other (its own handshake included).
 * Losing one member fails the channel with `CONNECTION_LOST` (see {@linkcode StripedChannel}).
 * A striping listener takes striped clients only.
 *
 * @example
 * ```ts ignore
 * const striped = stripedTransport(tcpTransport, { psk, members: 4 });
 * const session = await Session.connect(await striped.connect(address), { psk });
 * ```
 */
export function stripedTransport(inner: Transport, options: StripedTransportOptions): Transport {
  const members = options.members ?? 4;
  assertInteger("members", members, 1, STRIPE_MAX_MEMBERS);
  const config = resolveSessionConfig({
    psk: options.psk,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    logger: options.logger,
  });
  return {
    name: `${inner.name}-striped`,
    connect: (address, signal) => connectStripe(inner, address, members, config, options, signal),
    listen: (address) => listenStripes(inner.listen(address), config, options),
  };
}

async function connectStripe(
  inner: Transport,
  address: TransportAddress,
  count: number,
  config: SessionConfig,
  options: StripedChannelOptions,
  signal?: AbortSignal,
): Promise<ByteChannel> {
  const groupId = crypto.getRandomValues(new Uint8Array(STRIPE_GROUP_ID_BYTES));
  const opened: ByteChannel[] = [];
  const joinOne = async (index: number): Promise<StripeMember> => {
    const channel = await inner.connect(address, signal);
    opened.push(channel);
    const hs = await clientHandshake(channel, config);
    // The server proved the key on this connection: a trust-on-first-use transport may pin.
    await channel.authenticated?.();
    try {
      await hs.writer.write(encodeStripeJoin({ groupId, index, count }, hs.sendKey));
    } catch (error) {
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `stripe member ${
          index + 1
        } of ${count} to ${channel.remote} failed while joining: ${error}`,
        { cause: error, retryable: true },
      );
    }
    return {
      channel,
      input: new ChunkReader(hs.reader, hs.leftover),
      writer: hs.writer,
      sendKey: hs.sendKey,
      receiveKey: hs.receiveKey,
    };
  };
  const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => joinOne(i)));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) {
    for (const channel of opened) channel.close();
    throw failed.reason;
  }
  return new StripedChannel(
    results.map((r) => (r as PromiseFulfilledResult<StripeMember>).value),
    options,
  );
}

function listenStripes(
  inner: TransportListener,
  config: SessionConfig,
  options: StripedTransportOptions,
): TransportListener {
  const maxPending = options.maxPendingStripes ?? 64;
  const gathering = new Map<string, Gathering>();
  const ready: ByteChannel[] = [];
  const readySignal = new Signal();
  const loose = new Set<ByteChannel>(); // members between accept and JOIN
  let closed = false;
  let failure: unknown;

  const reject = (channel: ByteChannel, event: string, message: string) => {
    config.logger({ level: "warn", event, remote: channel.remote, message });
    channel.close();
  };

  const admit = async (channel: ByteChannel): Promise<void> => {
    loose.add(channel);
    const timer = setTimeout(() => channel.close(), config.handshakeTimeoutMs);
    let member: StripeMember;
    let join;
    try {
      const hs = await serverHandshake(channel, config); // logs its own failures
      const input = new ChunkReader(hs.reader, hs.leftover);
      const bytes = await input.read(STRIPE_JOIN_BYTES);
      if (bytes === null) throw new Error("closed before its stripe JOIN");
      join = decodeStripeJoin(bytes, hs.receiveKey);
      member = {
        channel,
        input,
        writer: hs.writer,
        sendKey: hs.sendKey,
        receiveKey: hs.receiveKey,
      };
    } catch (error) {
      if (!(error instanceof PresyncError) || error.code === ErrorCode.CONNECTION_LOST) {
        if (!closed) {
          reject(channel, "stripe_join_failed", `no stripe JOIN from ${channel.remote}: ${error}`);
        }
      } else if (
        !["AUTH_FAILED", "HANDSHAKE_CORRUPT", "PROTOCOL_VERSION", "TIMEOUT"].includes(error.code)
      ) {
        reject(channel, "stripe_join_failed", `bad stripe JOIN from ${channel.remote}: ${error}`);
      }
      channel.close();
      return;
    } finally {
      clearTimeout(timer);
      loose.delete(channel);
    }
    if (closed) return channel.close();
    const key = hex(join.groupId);
    let group = gathering.get(key);
    if (group === undefined) {
      if (gathering.size >= maxPending) {
        return reject(
          channel,
          "stripe_refused",
          `refusing a stripe member from ${channel.remote}: ${maxPending} stripes are already ` +
            `gathering`,
        );
      }
      const members = new Array<StripeMember | undefined>(join.count).fill(undefined);
      group = {
        count: join.count,
        members,
        joined: 0,
        timer: setTimeout(() => {
          gathering.delete(key);
          closeAll(members);
          config.logger({
            level: "warn",
            event: "stripe_incomplete",
            remote: channel.remote,
            message: `stripe ${key} from ${channel.remote} did not gather its ${join.count} ` +
              `members within ${config.handshakeTimeoutMs} ms: closed`,
          });
        }, config.handshakeTimeoutMs),
      };
      gathering.set(key, group);
    }
    if (join.count !== group.count || group.members[join.index] !== undefined) {
      return reject(
        channel,
        "stripe_join_failed",
        `stripe member from ${channel.remote} claims index ${join.index} of ${join.count} in ` +
          `stripe ${key}, which has ${group.count} members and that index taken`,
      );
    }
    group.members[join.index] = member;
    if (++group.joined < group.count) return;
    clearTimeout(group.timer);
    gathering.delete(key);
    ready.push(new StripedChannel(group.members as StripeMember[], options));
    readySignal.notify();
  };

  const pump = (async () => {
    while (!closed) {
      let channel: ByteChannel;
      try {
        channel = await inner.accept();
      } catch (error) {
        if (!closed) failure = error;
        break;
      }
      admit(channel);
    }
    readySignal.notify();
  })();
  pump.catch(() => {});

  const accept = async (): Promise<ByteChannel> => {
    while (true) {
      const next = ready.shift();
      if (next) return next;
      if (closed || failure !== undefined) {
        throw new PresyncError(
          ErrorCode.SESSION_CLOSED,
          `the striping listener on ${inner.addr.hostname}:${inner.addr.port} is closed`,
          { cause: failure },
        );
      }
      await readySignal.wait();
    }
  };
  return {
    addr: inner.addr,
    accept,
    close: () => {
      if (closed) return;
      closed = true;
      inner.close();
      for (const group of gathering.values()) {
        clearTimeout(group.timer);
        closeAll(group.members);
      }
      gathering.clear();
      for (const channel of loose) channel.close();
      for (const channel of ready.splice(0)) channel.close();
      readySignal.notify();
    },
    [Symbol.asyncIterator]: () => acceptUntilClosed(accept, () => closed),
  };
}
