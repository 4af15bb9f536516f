import assert from "node:assert/strict";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { checkControlSocket } from "../cli/_control_client.ts";
import { claimSocketPath, controlSocketPath } from "./control_socket.ts";
import { runtimeDir } from "./runtime_dir.ts";

const isRoot = Deno.uid() === 0;
/** A uid that is not ours (nobody), for the tests that chown (root only). */
const OTHER_UID = 65534;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-ctl-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A socket left behind by a process killed with SIGKILL (nobody answers on it). */
async function staleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `await Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} }).accept();`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 20_000;
  while (!exists(path)) {
    if (Date.now() > deadline) throw new Error("the child never bound its socket");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill("SIGKILL");
  await child.status;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a free socket path gets a private directory", async () => {
  await withDir(async (dir) => {
    assert.equal(await claimSocketPath(`${dir}/run/agent.sock`), "free");
    assert.equal(Deno.lstatSync(`${dir}/run`).mode! & 0o777, 0o700);
  });
});

Deno.test("a stale socket (its process killed with -9) is replaced; a live one is not taken", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/agent.sock`;
    await staleSocket(path);
    assert.equal(await claimSocketPath(path), "stale");
    assert.ok(!exists(path));
    const live = Deno.listen({ transport: "unix", path });
    try {
      const err = await assertRejectsCode(claimSocketPath(path), "ADDRESS_IN_USE");
      assert.match(err.message, /another process answers on control socket/);
      assert.ok(Deno.lstatSync(path).isSocket, "the live socket is left alone");
    } finally {
      live.close();
    }
  });
});

Deno.test("a planted symlink or file at the socket path is refused and left untouched", async () => {
  await withDir(async (dir) => {
    const target = `${dir}/precious`;
    await Deno.writeTextFile(target, "do not touch");
    await Deno.symlink(target, `${dir}/link.sock`);
    const link = await assertRejectsCode(claimSocketPath(`${dir}/link.sock`), "CONTROL_UNSAFE");
    assert.match(link.message, /is a symlink: presync does not replace or follow it/);
    await Deno.writeTextFile(`${dir}/file.sock`, "planted");
    const file = await assertRejectsCode(claimSocketPath(`${dir}/file.sock`), "CONTROL_UNSAFE");
    assert.match(file.message, /is not a socket/);
    assert.equal(await Deno.readTextFile(target), "do not touch");
    assert.equal(await Deno.readTextFile(`${dir}/file.sock`), "planted");
    assert.ok(Deno.lstatSync(`${dir}/link.sock`).isSymlink);
  });
});

Deno.test("a control directory others can enter, a symlinked one or a file is refused", async () => {
  await withDir(async (dir) => {
    for (const mode of [0o755, 0o777, 0o710]) {
      const run = `${dir}/run-${mode.toString(8)}`;
      await Deno.mkdir(run);
      await Deno.chmod(run, mode);
      const err = await assertRejectsCode(claimSocketPath(`${run}/agent.sock`), "CONTROL_UNSAFE");
      assert.match(err.message, new RegExp(`has mode 0${mode.toString(8)}.*chmod 700`));
    }
    await Deno.mkdir(`${dir}/elsewhere`, { mode: 0o700 });
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/run-link`);
    const link = await assertRejectsCode(
      claimSocketPath(`${dir}/run-link/agent.sock`),
      "CONTROL_UNSAFE",
    );
    assert.match(link.message, /is a symlink/);
    assert.deepStrictEqual([...Deno.readDirSync(`${dir}/elsewhere`)], []);
    await Deno.writeTextFile(`${dir}/run-file`, "");
    await assertRejectsCode(claimSocketPath(`${dir}/run-file/agent.sock`), "CONTROL_UNSAFE");
  });
});

Deno.test({
  name: "another user's directory or socket is refused (root: chown to nobody)",
  ignore: !isRoot,
  fn: async () => {
    await withDir(async (dir) => {
      await Deno.mkdir(`${dir}/theirs`, { mode: 0o700 });
      await Deno.chown(`${dir}/theirs`, OTHER_UID, OTHER_UID);
      const owned = await assertRejectsCode(
        claimSocketPath(`${dir}/theirs/agent.sock`),
        "CONTROL_UNSAFE",
      );
      assert.match(owned.message, new RegExp(`belongs to uid ${OTHER_UID}`));
      const path = `${dir}/agent.sock`;
      await staleSocket(path);
      await Deno.chown(path, OTHER_UID, OTHER_UID);
      const socket = await assertRejectsCode(claimSocketPath(path), "CONTROL_UNSAFE");
      assert.match(
        socket.message,
        new RegExp(`belongs to uid ${OTHER_UID}.*does not take it over`),
      );
      assert.ok(exists(path));
    });
  },
});

Deno.test("the client refuses a socket another user could have planted", async () => {
  await withDir(async (dir) => {
    const missing = assertThrowsCode(
      () => checkControlSocket(`${dir}/none.sock`),
      "CONNECTION_LOST",
    );
    assert.match(missing.message, /no control socket at/);
    await Deno.writeTextFile(`${dir}/file.sock`, "");
    assertThrowsCode(() => checkControlSocket(`${dir}/file.sock`), "CONTROL_UNSAFE");
    await staleSocket(`${dir}/real.sock`);
    await Deno.symlink(`${dir}/real.sock`, `${dir}/link.sock`);
    const link = assertThrowsCode(() => checkControlSocket(`${dir}/link.sock`), "CONTROL_UNSAFE");
    assert.match(link.message, /it is a symlink/);
    checkControlSocket(`${dir}/real.sock`);
    await Deno.mkdir(`${dir}/open`);
    await Deno.chmod(`${dir}/open`, 0o777);
    await staleSocket(`${dir}/open/agent.sock`);
    const open = assertThrowsCode(
      () => checkControlSocket(`${dir}/open/agent.sock`),
      "CONTROL_UNSAFE",
    );
    assert.match(open.message, /has mode 777 \(others may write\)/);
    if (isRoot) {
      await Deno.mkdir(`${dir}/theirs`, { mode: 0o755 });
      await staleSocket(`${dir}/theirs/agent.sock`);
      await Deno.chown(`${dir}/theirs`, OTHER_UID, OTHER_UID);
      const theirs = assertThrowsCode(
        () => checkControlSocket(`${dir}/theirs/agent.sock`),
        "CONTROL_UNSAFE",
      );
      assert.match(theirs.message, new RegExp(`belongs to uid ${OTHER_UID}, the socket to 0`));
    }
  });
});

Deno.test("the runtime directory: systemd's, /run for root, XDG for users, else /tmp/presync-UID", () => {
  const env = (uid: number, vars: Record<string, string>) => ({ uid, get: (k: string) => vars[k] });
  assert.equal(
    runtimeDir("agent", env(0, { RUNTIME_DIRECTORY: "/run/presync/agent" })),
    "/run/presync/agent",
  );
  assert.equal(
    runtimeDir("serve", env(0, { XDG_RUNTIME_DIR: "/run/user/0" })),
    "/run/presync/serve",
  );
  assert.equal(
    runtimeDir("agent", env(54321, { XDG_RUNTIME_DIR: "/run/user/54321" })),
    "/run/user/54321/presync/agent",
  );
  assert.equal(runtimeDir("agent", env(54321, {})), "/tmp/presync-54321/agent");
  const user = env(54321, { XDG_RUNTIME_DIR: "/run/user/54321" });
  assert.equal(
    controlSocketPath("agent", undefined, "db1", user),
    "/run/user/54321/presync/agent/db1.sock",
  );
  assert.equal(controlSocketPath("agent", "/srv/x.sock", "db1", user), "/srv/x.sock");
  const port = assertThrowsCode(
    () => controlSocketPath("agent", "127.0.0.1:7732", "db1", user),
    "INVALID_ARGUMENT",
  );
  assert.match(port.message, /unix socket path or name now.*--metrics-listen 127\.0\.0\.1:7732/);
  assertThrowsCode(() => controlSocketPath("agent", "..", "db1", user), "INVALID_ARGUMENT");
});
