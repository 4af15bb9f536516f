/**
 * scripts/run_tests.sh on a tree of its own: three test files (three pieces of work for its two
 * workers), one of them allocating without bound. The runner must kill that run at its memory
 * bound and say so, run the other two, and exit non-zero naming the failed file.
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
const modest = (name: string) => `Deno.test("${name} passes", () => {});\n`;

Deno.test("run_tests.sh kills a test run over PRESYNC_TEST_MAX_RSS_MIB, says so, runs the rest, and fails naming the file", async () => {
  const root = await Deno.makeTempDir({ prefix: "presync-run-tests-" });
  try {
    await Deno.mkdir(`${root}/scripts`);
    await Deno.copyFile(RUNNER, `${root}/scripts/run_tests.sh`);
    await Deno.writeTextFile(`${root}/a_test.ts`, GREEDY);
    await Deno.writeTextFile(`${root}/b_test.ts`, modest("b"));
    await Deno.writeTextFile(`${root}/c_test.ts`, modest("c"));
    const run = await new Deno.Command("bash", {
      args: [`${root}/scripts/run_tests.sh`],
      env: { DENO: Deno.execPath(), PRESYNC_TEST_MAX_RSS_MIB: "300", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
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
