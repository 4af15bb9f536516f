import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type tls from "node:tls";
import { PresyncError } from "../../agent/errors.ts";
import { socketChannel } from "./_socket_channel.ts";

/** A stand-in for a node:tls socket: records calls, emits what the test says. */
class FakeSocket extends EventEmitter {
  written: Uint8Array[] = [];
  destroyed = false;
  acceptWrites = true;
  get writableLength(): number {
    return this.acceptWrites ? 0 : 1 << 30;
  }
  write(chunk: Uint8Array): boolean {
    this.written.push(chunk);
    return this.acceptWrites;
  }
  end(callback?: () => void): void {
    if (callback) queueMicrotask(callback);
  }
  destroy(): void {
    this.destroyed = true;
  }
  pause(): void {}
  resume(): void {}
}

type Event = "data" | "end" | "error" | "close";
const EVENTS: Event[] = ["data", "end", "error", "close"];

function emit(socket: FakeSocket, event: Event): void {
  if (event === "data") socket.emit("data", new Uint8Array([1, 2, 3]));
  else if (event === "error") socket.emit("error", new Error("bad record mac"));
  else socket.emit(event);
}

/**
 * Every ordering of every subset of the events that ends the connection somehow (an `end`, an
 * `error` or a `close`), each ordering also repeated twice over.
 */
function* orderings(): Generator<Event[]> {
  const permute = function* (rest: Event[], prefix: Event[]): Generator<Event[]> {
    if (prefix.some((e) => e !== "data")) yield prefix;
    for (const event of rest) {
      yield* permute(rest.filter((e) => e !== event), [...prefix, event]);
    }
  };
  for (const order of permute(EVENTS, [])) {
    yield order;
    yield [...order, ...order];
  }
}

async function outcome(readable: ReadableStream<Uint8Array>): Promise<string> {
  try {
    for await (const _ of readable) { /* drain */ }
    return "closed";
  } catch (error) {
    assert.ok(error instanceof PresyncError, `expected a PresyncError: ${error}`);
    assert.equal(error.code, "CONNECTION_LOST");
    assert.ok(error.retryable);
    return "errored";
  }
}

Deno.test("tls socket channel: socket events in any order end the readable once, never throw", async () => {
  let count = 0;
  for (const order of orderings()) {
    const socket = new FakeSocket();
    const channel = socketChannel(socket as unknown as tls.TLSSocket, "peer:1");
    for (const event of order) emit(socket, event); // throws here would fail the test
    const result = await outcome(channel.readable);
    const firstEnd = order.find((e) => e !== "data")!;
    assert.equal(result, firstEnd === "end" ? "closed" : "errored", order.join(","));
    count++;
  }
  assert.ok(count > 100);
});

Deno.test("tls socket channel: a write after an error or a close fails with CONNECTION_LOST", async () => {
  for (const event of ["error", "close"] as const) {
    const socket = new FakeSocket();
    const channel = socketChannel(socket as unknown as tls.TLSSocket, "peer:1");
    const writer = channel.writable.getWriter();
    await writer.write(new Uint8Array([1]));
    emit(socket, event);
    await assert.rejects(
      writer.write(new Uint8Array([2])),
      (e) => e instanceof PresyncError && e.code === "CONNECTION_LOST",
    );
    assert.equal(socket.written.length, 1, "nothing is written after the failure");
  }
});

Deno.test("tls socket channel: a write waits for drain, and fails if the socket fails instead", async () => {
  const socket = new FakeSocket();
  socket.acceptWrites = false;
  const channel = socketChannel(socket as unknown as tls.TLSSocket, "peer:1");
  const writer = channel.writable.getWriter();
  let done = false;
  const first = writer.write(new Uint8Array([1])).then(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(done, false, "waits while the socket buffer is full");
  socket.emit("drain");
  await first;
  const second = writer.write(new Uint8Array([2]));
  socket.emit("close");
  await assert.rejects(second, (e) => e instanceof PresyncError && e.code === "CONNECTION_LOST");
});

Deno.test("tls socket channel: close() lets written bytes drain (end), after a failure it destroys", () => {
  const healthy = new FakeSocket();
  let ended = false;
  healthy.end = () => void (ended = true);
  socketChannel(healthy as unknown as tls.TLSSocket, "peer:1").close();
  assert.ok(ended && !healthy.destroyed, "a healthy socket is ended, so its buffer is sent");
  healthy.emit("close");

  const failed = new FakeSocket();
  const channel = socketChannel(failed as unknown as tls.TLSSocket, "peer:1");
  emit(failed, "error");
  channel.close();
  assert.ok(failed.destroyed);
});
