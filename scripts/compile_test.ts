import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
/** The npm packages the `presync` binary may load at run time. */
const RUNTIME_PACKAGES = [
  "@bokuweb/zstd-wasm",
  "cli-progress",
  // serve makes its self-signed TLS certificate with @peculiar/x509, which needs reflect-metadata.
  "@peculiar/x509",
  "reflect-metadata",
];
/** Entry points `deno task compile` embeds: the CLI and its Worker scripts. */
const ENTRY_POINTS = [
  "agent/main.ts",
  "plugins/tracker-nbd/_tracker_worker.ts",
  "plugins/tracker-scan/_scan_worker.ts",
];

/** The npm packages (name without version) the module graph of `entry` loads. */
async function npmPackagesOf(entry: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  const names = (info.modules as { specifier: string }[])
    .map((m) => /^npm:\/?((?:@[^/]+\/)?[^@/]+)@/.exec(m.specifier)?.[1])
    .filter((name): name is string => name !== undefined);
  return [...new Set(names)].sort();
}

Deno.test("the binary embeds only what the CLI loads: no AssemblyScript, vega or resvg", async () => {
  for (const entry of ENTRY_POINTS) {
    for (const name of await npmPackagesOf(entry)) {
      assert.ok(RUNTIME_PACKAGES.includes(name), `${entry} loads npm:${name}, a dev tool?`);
    }
  }
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const compile: string = config.tasks.compile;
  // Without it, deno compile embeds every package of the lock file (122 MB, binaryen alone 93).
  assert.match(compile, /--exclude-unused-npm/);
  for (const entry of ENTRY_POINTS.slice(1)) assert.ok(compile.includes(`--include ${entry}`));
  assert.ok(compile.includes("--include agent/core/presync_core.wasm"));
  // `deno task presync` (and the processes tests start, fixtures/cluster.ts) run with the V8
  // flags the binary is built with, so what is measured is what ships.
  const v8Flags = (task: string) => /--v8-flags=(\S+)/.exec(task)?.[1];
  assert.ok(v8Flags(compile), "the compile task sets --v8-flags (docs/BENCHMARKS.md)");
  assert.equal(v8Flags(config.tasks.presync), v8Flags(compile));
});
