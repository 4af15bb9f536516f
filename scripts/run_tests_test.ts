/**
 * scripts/run_tests.sh on trees of its own, a few test files each: the runner must pass a tree
 * whose tests pass; kill a run at its memory bound, say so, run the rest and fail naming the
 * file; end what a test left behind; and on TERM to it, or Ctrl-C's INT to its whole process
 * group, end the running tests with what they started, start no other, and exit 128 + the
 * signal's number.
 */

import assert from "node:assert/strict";

const RUNNER = new URL("./run_tests.sh", import.meta.url).pathname;

/** Allocates 32 MiB of touched memory every 50 ms, up to 1 GiB, then waits a minute. */
const GREEDY = `
Deno.test("allocates without bound", async () => {
  const held = [];
  for (let i = 0; i < 32; i++) {
    held.push(new Uint8Array(32 * 1024 * 1024).fill(1));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await new Promise((resolve) => setTimeout(resolve, 60_000));
  console.log(held.length);
});
`;
const modest = (name: string) => `Deno.test("${name} passes", () => {});\n`;

/** A test that starts `sleep` in the background with this run's output, notes its pid, and
 * passes (after `waitMs`): a daemon left behind. */
const leaver = (pidFile: string, waitMs: number) => `
Deno.test("leaves a sleep behind", async () => {
  await new Deno.Command("bash", {
    args: ["-c", 'sleep 300 & echo $! > ${pidFile}'],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  await new Promise((resolve) => setTimeout(resolve, ${waitMs}));
});
`;

/** A temporary tree with the runner and the test files `files(root)` names. */
async function tree(files: (root: string) => Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "presync-run-tests-" });
  await Deno.mkdir(`${root}/scripts`);
  await Deno.copyFile(RUNNER, `${root}/scripts/run_tests.sh`);
  for (const [name, text] of Object.entries(files(root))) {
    await Deno.writeTextFile(`${root}/${name}`, text);
  }
  return root;
}

/** The runner on `root`; with `ownGroup`, leading a process group of its own (as a shell's job). */
function runner(root: string, env: Record<string, string> = {}, ownGroup = false): Deno.Command {
  return new Deno.Command(ownGroup ? "setsid" : "bash", {
    args: [...(ownGroup ? ["bash"] : []), `${root}/scripts/run_tests.sh`],
    env: { DENO: Deno.execPath(), NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  });
}

function outputOf(run: Deno.CommandOutput): string {
  return new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
}

/** True while process `pid` exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return false;
  }
}

async function pidIn(file: string, deadlineMs: number): Promise<number> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    const text = await Deno.readTextFile(file).catch(() => "");
    if (/^\d+\n$/.test(text)) return Number(text);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new assert.AssertionError({ message: `no pid in ${file} after ${deadlineMs} ms` });
}

Deno.test("run_tests.sh passes a tree whose tests pass, file names with spaces included", async () => {
  const root = await tree(() => ({ "a_test.ts": modest("a"), "b c_test.ts": modest("b c") }));
  try {
    const run = await runner(root).output();
    const said = outputOf(run);
    assert.equal(run.code, 0, said);
    assert.match(said, /run_tests\.sh: 2 test files in 2 pieces, two workers/);
    assert.match(said, /\[[12]\] a passes \.\.\. ok/);
    assert.match(said, /\[[12]\] b c passes \.\.\. ok/);
    assert.match(said, /run_tests\.sh: all 2 pieces passed\n$/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("run_tests.sh kills a test run over PRESYNC_TEST_MAX_RSS_MIB, says so, runs the rest, and fails naming the file", async () => {
  const root = await tree(() => ({
    "a_test.ts": GREEDY,
    "b_test.ts": modest("b"),
    "c_test.ts": modest("c"),
  }));
  try {
    const run = await runner(root, { PRESYNC_TEST_MAX_RSS_MIB: "300" }).output();
    const said = outputOf(run);
    assert.equal(run.code, 1, said);
    assert.match(said, /run_tests\.sh: 3 test files in 3 pieces, two workers/);
    assert.match(
      said,
      /worker \[[12]\]'s deno test \(pid \d+\) holds \d+ MiB, over PRESYNC_TEST_MAX_RSS_MIB=300: killed/,
    );
    assert.match(said, /\[[12]\] allocates without bound \.\.\./);
    assert.match(said, /\[[12]\] run_tests\.sh: exit status 137 from \.\/a_test\.ts/);
    assert.match(said, /\[[12]\] b passes \.\.\. ok/);
    assert.match(said, /\[[12]\] c passes \.\.\. ok/);
    assert.match(
      said,
      /run_tests\.sh: 1 of 3 pieces failed \(exit status, files\):\n137 \.\/a_test\.ts\n/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("run_tests.sh fails a test run that left a process behind, names it and ends it", async () => {
  const root = await tree((root) => ({
    "a_test.ts": leaver(`${root}/sleep.pid`, 0),
    "b_test.ts": modest("b"),
  }));
  let sleeper = 0;
  try {
    const run = await runner(root).output();
    const said = outputOf(run);
    sleeper = await pidIn(`${root}/sleep.pid`, 1000);
    assert.equal(run.code, 1, said);
    assert.match(
      said,
      /\[[12]\] run_tests\.sh: \.\/a_test\.ts left processes behind; ending them:\n\[[12]\] +\d+ sleep 300\n/,
    );
    assert.match(said, /\[[12]\] b passes \.\.\. ok/);
    assert.match(
      said,
      /run_tests\.sh: 1 of 2 pieces failed \(exit status, files\):\nleft \.\/a_test\.ts\n/,
    );
    assert.ok(!alive(sleeper), `the sleep (pid ${sleeper}) was ended`);
  } finally {
    if (sleeper > 0 && alive(sleeper)) Deno.kill(sleeper, "SIGKILL");
    await Deno.remove(root, { recursive: true });
  }
});

for (
  const { signal, to, code } of [
    { signal: "SIGTERM", to: "the runner", code: 143 },
    { signal: "SIGINT", to: "its process group (Ctrl-C)", code: 130 },
  ] as const
) {
  Deno.test(`run_tests.sh on ${signal} to ${to} ends the running tests and what they started, starts no other, and exits ${code}`, async () => {
    const root = await tree((root) => ({
      "a_test.ts": leaver(`${root}/a.pid`, 120_000),
      "b_test.ts": leaver(`${root}/b.pid`, 120_000),
      "c_test.ts": `Deno.test("c", () => Deno.writeTextFileSync("${root}/c.ran", ""));\n`,
    }));
    const sleepers: number[] = [];
    const run = runner(root, {}, to !== "the runner").spawn();
    try {
      sleepers.push(await pidIn(`${root}/a.pid`, 30_000), await pidIn(`${root}/b.pid`, 30_000));
      Deno.kill(to === "the runner" ? run.pid : -run.pid, signal);
      const ended = await Promise.race([
        run.output(),
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 30_000)),
      ]);
      assert.ok(ended, `run_tests.sh ended within 30 s of ${signal}`);
      const said = outputOf(ended);
      assert.equal(ended.code, code, said);
      assert.match(said, /run_tests\.sh: stopped by a signal; ending the running tests/);
      for (const pid of sleepers) assert.ok(!alive(pid), `the sleep (pid ${pid}) was ended`);
      assert.equal(await Deno.stat(`${root}/c.ran`).catch(() => null), null, "c_test.ts never ran");
    } finally {
      for (const pid of sleepers) if (alive(pid)) Deno.kill(pid, "SIGKILL");
      try {
        Deno.kill(to === "the runner" ? run.pid : -run.pid, "SIGKILL");
      } catch {
        // it has ended
      }
      await run.status;
      await Deno.remove(root, { recursive: true });
    }
  });
}
