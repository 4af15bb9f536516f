import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu, startBareQemu } from "../../fixtures/guest/qemu_process.ts";
import { QmpClient } from "./qmp_client.ts";

const qemu = await needQemu();

Deno.test({
  name: "QMP against a real QEMU: greeting, commands with ids, errors with their class, events",
  ...qemu,
  async fn() {
    await using rig = await startBareQemu();
    await using qmp = await QmpClient.connect(rig.vm.qmp[0]);
    assert.ok(qmp.version.major >= 7, `QEMU ${JSON.stringify(qmp.version)}`);
    // Concurrent commands are matched to their replies by id.
    const [status, name, commands] = await Promise.all([
      qmp.execute("query-status"),
      qmp.execute("query-name"),
      qmp.execute("query-commands"),
    ]);
    assert.equal((status as { status: string }).status, "running");
    assert.deepEqual(name, {});
    assert.ok((commands as { name: string }[]).some((c) => c.name === "transaction"));
    const err = await assertRejectsCode(qmp.execute("no-such-command"), "QMP_COMMAND_FAILED");
    assert.match(err.message, /CommandNotFound/);
    await assertRejectsCode(
      qmp.execute("blockdev-del", { "node-name": "nothing" }),
      "QMP_COMMAND_FAILED",
    );
    // An event awaited before the command that causes it.
    const stopped = qmp.waitForEvent("STOP");
    await qmp.execute("stop");
    const event = await stopped;
    assert.ok(event.timestampMs > 0);
    assert.equal((await qmp.execute("query-status") as { status: string }).status, "paused");
    await assertRejectsCode(qmp.waitForEvent("NEVER", () => true, 50), "TIMEOUT");
  },
});

Deno.test({
  name: "writes through human-monitor-command qemu-io land in a blockdev-add'ed file",
  ...qemu,
  async fn() {
    await using rig = await startBareQemu();
    const image = `${rig.dir}/disk.img`;
    await Deno.writeFile(image, new Uint8Array(1 << 20));
    await using qmp = await QmpClient.connect(rig.vm.qmp[0]);
    await qmp.execute("blockdev-add", {
      "node-name": "disk0",
      driver: "raw",
      file: { driver: "file", filename: image },
    });
    await qmp.execute("human-monitor-command", {
      "command-line": 'qemu-io disk0 "write -P 0xab 65536 4096"',
    });
    const bytes = await Deno.readFile(image);
    assert.ok(bytes.subarray(65536, 65536 + 4096).every((b) => b === 0xab));
    assert.equal(bytes[65536 + 4096], 0);
  },
});

Deno.test({
  name: "QEMU killed while a command waits: it fails with CONNECTION_LOST, and so does the next",
  ...qemu,
  async fn() {
    await using rig = await startBareQemu();
    const qmp = await QmpClient.connect(rig.vm.qmp[0]);
    const ended = assertRejectsCode(
      qmp.waitForEvent("NEVER", () => true, 60_000),
      "CONNECTION_LOST",
    );
    await rig.vm.kill();
    await ended;
    assert.equal((await qmp.closed)?.code, "CONNECTION_LOST");
    assert.ok(qmp.isClosed);
    await assertRejectsCode(qmp.execute("query-status"), "CONNECTION_LOST");
    await qmp.close();
  },
});

/** A fake QMP peer on a Unix socket that answers each connection with `serve`. */
async function fakePeer(serve: (conn: Deno.UnixConn) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "presync-qmp-fake-" });
  const path = `${dir}/fake.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const served = (async () => {
    for await (const conn of listener) {
      await serve(conn).catch(() => {});
      try {
        conn.close();
      } catch {
        // The client closed it.
      }
    }
  })();
  return {
    path,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const GREETING = '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, ' +
  '"package": ""}, "capabilities": []}}\n';

/** Reads one line at a time from a connection (keeping what follows for the next call). */
function lineReader(conn: Deno.UnixConn): () => Promise<string> {
  let buffered = "";
  const buffer = new Uint8Array(1024);
  return async () => {
    while (!buffered.includes("\n")) {
      const n = await conn.read(buffer);
      if (n === null) return "";
      buffered += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const at = buffered.indexOf("\n");
    const line = buffered.slice(0, at);
    buffered = buffered.slice(at + 1);
    return line;
  };
}

Deno.test("a peer that sends no greeting, a wrong one, or an oversize line is refused; stale events before the greeting are skipped", async () => {
  const encoder = new TextEncoder();
  {
    await using silent = await fakePeer(() => new Promise((resolve) => setTimeout(resolve, 500)));
    await assertRejectsCode(QmpClient.connect(silent.path, { timeoutMs: 100 }), "TIMEOUT");
  }
  {
    await using wrong = await fakePeer(async (conn) => {
      await conn.write(encoder.encode('{"return": {}}\n'));
    });
    const err = await assertRejectsCode(QmpClient.connect(wrong.path), "PROTOCOL_VIOLATION");
    assert.match(err.message, /greeting/);
  }
  {
    // A previous session's events ahead of the greeting are skipped, not delivered; a
    // peer that sends nothing but events is still refused.
    const event = (n: number) =>
      `{"event": "JOB_STATUS_CHANGE", "data": {"id": "j${n}"}, ` +
      `"timestamp": {"seconds": 1, "microseconds": 2}}\n`;
    await using stale = await fakePeer(async (conn) => {
      await conn.write(encoder.encode(event(1) + event(2) + GREETING));
      const caps = JSON.parse(await lineReader(conn)());
      await conn.write(encoder.encode(`{"return": {}, "id": "${caps.id}"}\n`));
      await new Promise((resolve) => setTimeout(resolve, 100));
    });
    const client = await QmpClient.connect(stale.path);
    const seen: string[] = [];
    client.onEvent((e) => seen.push(e.event));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(seen, []);
    await client.close();
    await using chatty = await fakePeer(async (conn) => {
      await conn.write(encoder.encode(event(0).repeat(300)));
      await new Promise((resolve) => setTimeout(resolve, 200));
    });
    const err = await assertRejectsCode(QmpClient.connect(chatty.path), "PROTOCOL_VIOLATION");
    assert.match(err.message, /256 events and no greeting/);
  }
  {
    await using huge = await fakePeer(async (conn) => {
      await conn.write(encoder.encode(GREETING));
      await lineReader(conn)();
      await conn.write(encoder.encode(`{"return": "${"x".repeat(4096)}`));
      await new Promise((resolve) => setTimeout(resolve, 200));
    });
    await assertRejectsCode(
      QmpClient.connect(huge.path, { maxLineBytes: 1024 }),
      "PROTOCOL_VIOLATION",
    );
  }
});

Deno.test("a command QEMU does not answer in time fails with TIMEOUT; a late reply is dropped", async () => {
  const encoder = new TextEncoder();
  await using slow = await fakePeer(async (conn) => {
    const readLine = lineReader(conn);
    await conn.write(encoder.encode(GREETING));
    const caps = JSON.parse(await readLine());
    await conn.write(encoder.encode(`{"return": {}, "id": "${caps.id}"}\n`));
    const first = JSON.parse(await readLine());
    const second = JSON.parse(await readLine());
    // Answers the second at once and the first only after its timeout.
    await conn.write(encoder.encode(`{"return": 2, "id": "${second.id}"}\n`));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await conn.write(encoder.encode(`{"return": 1, "id": "${first.id}"}\n`));
    const third = JSON.parse(await readLine());
    await conn.write(encoder.encode(`{"return": 3, "id": "${third.id}"}\n`));
    await readLine();
  });
  await using qmp = await QmpClient.connect(slow.path);
  const first = qmp.execute("one", undefined, { timeoutMs: 100 });
  const second = qmp.execute("two");
  assert.equal(await second, 2);
  const err = await assertRejectsCode(first, "TIMEOUT");
  assert.ok(err.retryable);
  assert.equal(await qmp.execute("three"), 3);
});

Deno.test({
  name: "a QMP socket another client holds: the second client times out saying why",
  ...qemu,
  async fn() {
    await using rig = await startBareQemu();
    await using first = await QmpClient.connect(rig.vm.qmp[0]);
    const err = await assertRejectsCode(
      QmpClient.connect(rig.vm.qmp[0], { timeoutMs: 300 }),
      "TIMEOUT",
    );
    assert.match(err.message, /one client per QMP socket/);
    assert.equal((await first.execute("query-status") as { status: string }).status, "running");
  },
});
