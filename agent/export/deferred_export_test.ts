import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { ErrorCode } from "../errors.ts";
import { NbdClient } from "../nbd/nbd_client.ts";
import { NbdServer } from "../nbd/nbd_server.ts";
import { FileExport } from "../nbd/file_export.ts";
import { parseNbdAddress } from "../nbd/nbd_address.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { DeferredExport } from "./deferred_export.ts";

const SIZE = 256 * 1024;

/** A DeferredExport served on a unix socket, and a file with seeded bytes to switch to. */
async function rig(prngFill: (b: Uint8Array) => Uint8Array, timeoutMs?: number) {
  const dir = await Deno.makeTempDir({ prefix: "presync-deferred-" });
  const bytes = prngFill(new Uint8Array(SIZE));
  await Deno.writeFile(`${dir}/final.img`, bytes);
  const deferred = new DeferredExport({ name: "vm", sizeBytes: SIZE, readOnly: false, timeoutMs });
  const server = new NbdServer([deferred]);
  const address = await server.listen(parseNbdAddress(`unix:${dir}/nbd.sock`));
  const final = await FileExport.open(`${dir}/final.img`, { name: "vm" });
  return {
    bytes,
    deferred,
    final,
    address,
    async [Symbol.asyncDispose]() {
      await server.close();
      await final.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Settles to "pending" when `promise` has not settled after a few event-loop turns. */
async function stateOf(promise: Promise<unknown>): Promise<"pending" | "settled"> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
  return settled ? "settled" : "pending";
}

Deno.test("the handshake completes before the switchover; reads wait, then get the final bytes", () =>
  withSeed(async (prng) => {
    await using r = await rig((b) => prng.fill(b));
    const client = await NbdClient.connect(r.address, "vm");
    try {
      assert.equal(client.sizeBytes, SIZE);
      const read = client.read(4096, 8192);
      assert.equal(await stateOf(read), "pending", "a read was answered before the switchover");
      assert.equal(r.deferred.switched, false);
      r.deferred.resolve(r.final);
      assertBytesEqual(await read, r.bytes.subarray(4096, 4096 + 8192), "the waiting read");
      assert.equal(r.deferred.waitedRequests, 1);
      // After the switchover requests go straight through, writes included.
      await client.write(0, new Uint8Array(512).fill(7));
      assertBytesEqual(await client.read(0, 512), new Uint8Array(512).fill(7), "read after write");
    } finally {
      await client.close();
    }
  }));

Deno.test("a request waiting past the deadline fails with EIO; the connection stays usable", () =>
  withSeed(async (prng) => {
    await using r = await rig((b) => prng.fill(b), 200);
    const client = await NbdClient.connect(r.address, "vm");
    try {
      await assert.rejects(client.read(0, 4096), /error|EIO|failed/i);
      r.deferred.resolve(r.final);
      assertBytesEqual(await client.read(0, 4096), r.bytes.subarray(0, 4096), "read after EIO");
    } finally {
      await client.close();
    }
  }));

Deno.test("fail() ends every waiting request and every later one", () =>
  withSeed(async (prng) => {
    await using r = await rig((b) => prng.fill(b));
    const client = await NbdClient.connect(r.address, "vm");
    try {
      const read = client.read(0, 4096);
      assert.equal(await stateOf(read), "pending");
      r.deferred.fail(new Error("export stopped"));
      await assert.rejects(read);
      await assert.rejects(client.read(4096, 4096));
      // There is no switchover after a failure.
      assertThrowsCode(() => r.deferred.resolve(r.final), ErrorCode.INVALID_ARGUMENT);
    } finally {
      await client.close();
    }
  }));

Deno.test("the switchover refuses an export of another size or writability", () =>
  withSeed(async (prng) => {
    await using r = await rig((b) => prng.fill(b));
    const other = new DeferredExport({ name: "vm", sizeBytes: SIZE * 2, readOnly: false });
    assertThrowsCode(() => other.resolve(r.final), ErrorCode.INVALID_ARGUMENT);
    const readOnly = new DeferredExport({ name: "vm", sizeBytes: SIZE, readOnly: true });
    assertThrowsCode(() => readOnly.resolve(r.final), ErrorCode.INVALID_ARGUMENT);
    r.deferred.resolve(r.final);
    assertThrowsCode(() => r.deferred.resolve(r.final), ErrorCode.INVALID_ARGUMENT);
  }));

Deno.test("before the switchover reads come from the committed replica; writes wait", () =>
  withSeed(async (prng) => {
    await using r = await rig((b) => prng.fill(b));
    const dir = await Deno.makeTempDir({ prefix: "presync-deferred-" });
    try {
      const old = prng.fill(new Uint8Array(SIZE));
      await Deno.writeFile(`${dir}/old.img`, old);
      const before = await FileExport.open(`${dir}/old.img`, { name: "vm", readOnly: true });
      const deferred = new DeferredExport({ name: "vm", sizeBytes: SIZE, readOnly: false, before });
      const server = new NbdServer([deferred]);
      const address = await server.listen(parseNbdAddress(`unix:${dir}/nbd.sock`));
      const client = await NbdClient.connect(address, "vm");
      try {
        assertBytesEqual(await client.read(0, 4096), old.subarray(0, 4096), "early read");
        assert.equal(deferred.earlyReads, 1);
        const write = client.write(8192, new Uint8Array(4096).fill(9));
        assert.equal(await stateOf(write), "pending", "a write was taken before the switchover");
        deferred.resolve(r.final);
        await write;
        assertBytesEqual(await client.read(8192, 4096), new Uint8Array(4096).fill(9), "the write");
        assertBytesEqual(await client.read(0, 4096), r.bytes.subarray(0, 4096), "final read");
        assertBytesEqual(await Deno.readFile(`${dir}/old.img`), old, "the replica was written");
      } finally {
        await client.close();
        await server.close();
        await before.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));
