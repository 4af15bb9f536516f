/**
 * scripts/run_tests.sh on a tree of its own: two test files, one in each process, one of them
 * allocating without bound. The runner must kill that process at its memory bound, name it,
 * let the other pass, and exit non-zero.
 */

import assert from "node:assert/strict";

const RUNNER = new URL("./run_tests.sh", import.meta.url).pathname;

/** Allocates 32 MiB of touched memory every 20 ms, up to 4 GiB, then waits a minute. */
const GREEDY = `
Deno.test("allocates without bound", async () => {
  const held = [];
  for (let i = 0; i < 128; i++) {
    held.push(new Uint8Array(32 * 1024 * 1024).fill(1));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await new Promise((resolve) => setTimeout(resolve, 60_000));
  console.log(held.length);
});
`;
const MODEST = `Deno.test("passes", () => {});\n`;

Deno.test("run_tests.sh kills a test process over PRESYNC_TEST_MAX_RSS_MIB, names it, and fails", async () => {
  const root = await Deno.makeTempDir({ prefix: "presync-run-tests-" });
  try {
    await Deno.mkdir(`${root}/scripts`);
    await Deno.copyFile(RUNNER, `${root}/scripts/run_tests.sh`);
    await Deno.writeTextFile(`${root}/a_test.ts`, GREEDY);
    await Deno.writeTextFile(`${root}/b_test.ts`, MODEST);
    const run = await new Deno.Command("bash", {
      args: [`${root}/scripts/run_tests.sh`],
      env: { DENO: Deno.execPath(), PRESYNC_TEST_MAX_RSS_MIB: "300", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 1, said);
    assert.match(said, /run_tests\.sh: 2 test files in two processes \(1 and 1\)/);
    // a_test.ts sorts first: process [1].
    assert.match(
      said,
      /run_tests\.sh: process \[1\] \(pid \d+\) holds \d+ MiB, over PRESYNC_TEST_MAX_RSS_MIB=300: killed/,
    );
    assert.match(said, /\[1\] allocates without bound \.\.\./);
    assert.match(said, /\[2\] passes \.\.\. ok/);
    assert.match(said, /run_tests\.sh: process \[1\] exited with 137/);
    assert.match(said, /run_tests\.sh: process \[2\] exited with 0/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
