import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);

Deno.test("the committed presync_core.wasm is exactly what assembly/ builds to", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "presync-wasm-" });
  try {
    const outFile = `${tmp}/presync_core.wasm`;
    const build = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "npm:assemblyscript@0.28.20/asc",
        "assembly/index.ts",
        "--config",
        "asconfig.json",
        "--target",
        "release",
        "--outFile",
        outFile,
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const fresh = await Deno.readFile(outFile);
    const committed = await Deno.readFile(new URL("agent/core/presync_core.wasm", root));
    assert.ok(
      fresh.length === committed.length && fresh.every((b, i) => b === committed[i]),
      "agent/core/presync_core.wasm is stale: run `deno task build` and commit the result",
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
