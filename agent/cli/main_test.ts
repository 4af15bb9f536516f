import assert from "node:assert/strict";
import { main } from "../main.ts";
import { ExitCode } from "./exit_codes.ts";

/** Runs `presync` as a separate process, as an operator would. */
async function presync(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("sync --local then verify: exit 0, and 3 once the source changes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-cli-" });
  try {
    const image = `${dir}/disk.img`;
    const file = await Deno.open(image, { write: true, create: true });
    await file.truncate(1024 * 1024);
    await file.write(new Uint8Array(3000).fill(42));
    file.close();
    const sync = await presync(
      "sync",
      "--local",
      image,
      `${dir}/store`,
      "--volume",
      "disk",
      "--json",
    );
    assert.equal(sync.code, ExitCode.OK, sync.stderr);
    const [report] = JSON.parse(sync.stdout);
    assert.equal(report.generation, 1);
    assert.equal(report.blocksSent, 1);
    const ok = await presync(
      "verify",
      "--local",
      `${dir}/store`,
      "--volume",
      "disk",
      "--source",
      image,
      "--json",
    );
    assert.equal(ok.code, ExitCode.OK, ok.stdout + ok.stderr);
    const again = await Deno.open(image, { write: true });
    await again.seek(500_000, Deno.SeekMode.Start);
    await again.write(new Uint8Array([1]));
    again.close();
    const bad = await presync(
      "verify",
      "--local",
      `${dir}/store`,
      "--volume",
      "disk",
      "--source",
      image,
      "--json",
    );
    assert.equal(bad.code, ExitCode.VERIFY_MISMATCH);
    assert.deepStrictEqual(JSON.parse(bad.stdout).differsFromSource, [[7, 1]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad command lines exit 2 with a message naming the problem", async () => {
  assert.equal(await main(["nonsense"]), ExitCode.USAGE);
  assert.equal(
    await main(["sync", "--local", "/nope.img", "/tmp/s", "--volume", "../etc"]),
    ExitCode.USAGE,
  );
  assert.equal(await main(["sync", "--bogus"]), ExitCode.USAGE);
  assert.equal(
    await main(["sync", "--local", "a.img", "s", "--volume", "v", "--block-size", "3k"]),
    ExitCode.USAGE,
  );
});

Deno.test("agent: a malformed qmp: volume, or one with another tracker, exits 2 before anything starts", async () => {
  const tcp = await presync("agent", "--volume", "vm=qmp:tcp:127.0.0.1:4444#disk0");
  assert.equal(tcp.code, ExitCode.USAGE);
  assert.match(tcp.stderr, /must be qmp:unix:PATH#NODE .*only a Unix socket is supported/);
  const nbd = await presync(
    "agent",
    "--volume",
    "vm=qmp:unix:/run/vm.qmp#disk0",
    "--tracker",
    "nbd",
  );
  assert.equal(nbd.code, ExitCode.USAGE);
  assert.match(nbd.stderr, /volume vm is a QEMU disk .*only the qemu tracker follows/);
  const file = await presync("agent", "--volume", "vm=/var/lib/vm.img", "--tracker", "qemu");
  assert.equal(file.code, ExitCode.USAGE);
  assert.match(
    file.stderr,
    /--tracker qemu follows disks of a running QEMU: give --volume vm=qmp:/,
  );
});

Deno.test("typos get a suggestion, and unknown flags a message in our words", async () => {
  const command = await presync("stauts");
  assert.equal(command.code, ExitCode.USAGE);
  assert.match(command.stderr, /unknown command "stauts" \(did you mean status\?\)/);
  const flag = await presync("sync", "--local", "a.img", "s", "--volume", "v", "--blok-size", "4k");
  assert.equal(flag.code, ExitCode.USAGE);
  assert.match(
    flag.stderr,
    /unknown flag --blok-size \(did you mean --block-size\?\); see presync help sync/,
  );
  assert.doesNotMatch(flag.stderr, /To specify a positional argument/);
  const missing = await presync("status", "--control");
  assert.equal(missing.code, ExitCode.USAGE);
  assert.match(missing.stderr, /--control needs a value/);
  const valued = await presync("status", "--json=yes");
  assert.match(valued.stderr, /--json is a switch and takes no value/);
});

Deno.test("--version, help and help COMMAND", async () => {
  const { VERSION } = await import("../version.ts");
  const version = await presync("--version");
  assert.equal(version.code, ExitCode.OK);
  assert.match(version.stdout, new RegExp(`^presync ${VERSION.replaceAll(".", "\\.")} \\(deno `));
  const overview = await presync("help");
  assert.equal(overview.code, ExitCode.OK);
  for (const name of ["agent", "serve", "status", "evacuate", "export"]) {
    assert.match(overview.stdout, new RegExp(`^  ${name} +\\S`, "m"), name);
  }
  const help = await presync("help", "evacuate");
  assert.equal(help.code, ExitCode.OK);
  assert.match(help.stdout, /^presync evacuate NAME .*--timeout SECONDS/);
  assert.equal((await presync("help", "evacuat")).code, ExitCode.USAGE);
});

Deno.test("status with no agent running exits 5; with --json the error is JSON on stdout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-cli-" });
  try {
    const status = await presync("status", "--control", `${dir}/agent.sock`, "--json");
    assert.equal(status.code, ExitCode.UNREACHABLE, status.stderr);
    const error = JSON.parse(status.stdout);
    assert.deepStrictEqual(
      { ok: error.ok, code: error.code, exitCode: error.exitCode },
      { ok: false, code: "CONNECTION_LOST", exitCode: ExitCode.UNREACHABLE },
    );
    assert.match(error.message, /no control socket/);
    const text = await presync("evacuate", "vm", "--control", `${dir}/agent.sock`);
    assert.equal(text.code, ExitCode.UNREACHABLE);
    assert.equal(text.stdout, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ambiguous and malformed units on the command line exit 2 with both readings", async () => {
  const rate = await presync(
    "agent",
    "--volume",
    "a=/x",
    "--rate",
    "20Mb",
    "--to",
    "127.0.0.1:1",
    "--key-file",
    "/nonexistent",
    "--state",
    "/nonexistent",
  );
  assert.equal(rate.code, ExitCode.USAGE);
  assert.match(rate.stderr, /--rate "20Mb" is ambiguous: .*20 Mbit\/s.* 20 MB\/s = 160 Mbit\/s/);
  const size = await presync(
    "sync",
    "--local",
    "a.img",
    "s",
    "--volume",
    "v",
    "--block-size",
    "4kb",
  );
  assert.equal(size.code, ExitCode.USAGE);
  assert.match(size.stderr, /--block-size "4kb" is not a size/);
});
