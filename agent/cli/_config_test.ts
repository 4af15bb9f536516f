import assert from "node:assert/strict";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { loadSettings, NUMERIC_FLAGS } from "./_config.ts";

const OPTIONS = {
  volume: { type: "string", multiple: true },
  interval: { type: "string" },
  rate: { type: "string" },
  to: { type: "string" },
  json: { type: "boolean" },
  config: { type: "string" },
} as const;

async function withConfig<T>(config: unknown, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "presync-config-" });
  try {
    const path = `${dir}/agent.json`;
    await Deno.writeTextFile(path, typeof config === "string" ? config : JSON.stringify(config));
    return await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("config: numbers where natural, one value or a list, the command line wins", async () => {
  await withConfig(
    { volume: "a=/img", interval: 5, rate: 2_500_000, to: "dr:7700" },
    async (config) => {
      const settings = await loadSettings({ config, to: "other:7700" }, OPTIONS, NUMERIC_FLAGS);
      assert.deepStrictEqual(settings.list("volume"), ["a=/img"]);
      assert.equal(settings.number("interval", 30, "seconds"), 5);
      assert.equal(settings.rate("rate", 0), 2_500_000);
      assert.equal(settings.text("to"), "other:7700");
      assert.equal(settings.name("interval"), `config ${config}: interval`);
      assert.equal(settings.name("to"), "--to");
    },
  );
  await withConfig({ volume: ["a=/1", "b=/2"], json: true }, async (config) => {
    const settings = await loadSettings({ config }, OPTIONS, NUMERIC_FLAGS);
    assert.deepStrictEqual(settings.list("volume"), ["a=/1", "b=/2"]);
    assert.equal(settings.flag("json"), true);
  });
});

Deno.test("config: unknown keys and wrong types are refused naming the key", async () => {
  const cases: [unknown, RegExp][] = [
    [{ intervall: 5 }, /unknown key "intervall" \(did you mean "interval"\?\)/],
    [{ config: "/x" }, /unknown key "config"/],
    [{ interval: true }, /interval must be a number or a string: received true/],
    [{ to: 7700 }, /to must be a string: received 7700/],
    [{ volume: { a: "b" } }, /volume must be a string or a list of strings/],
    [{ volume: ["a=b", 3] }, /volume must be a string or a list of strings/],
    [{ json: "yes" }, /json must be true or false/],
    [["interval", 5], /must hold a JSON object.*received a list/],
    ["{not json", /is not valid JSON/],
  ];
  for (const [config, message] of cases) {
    await withConfig(config, async (path) => {
      const err = await assertRejectsCode(
        loadSettings({ config: path }, OPTIONS, NUMERIC_FLAGS),
        "INVALID_ARGUMENT",
      );
      assert.match(err.message, message, JSON.stringify(config));
      assert.ok(err.message.includes(path), err.message);
    });
  }
  await assertRejectsCode(
    loadSettings({ config: "/nonexistent/agent.json" }, OPTIONS, NUMERIC_FLAGS),
    "INVALID_ARGUMENT",
  );
});

Deno.test("config: a bad value from the file names the file and the key", async () => {
  await withConfig({ rate: "20Mb", interval: -1 }, async (config) => {
    const settings = await loadSettings({ config }, OPTIONS, NUMERIC_FLAGS);
    const rate = assertThrowsCode(() => settings.rate("rate", 0), "INVALID_ARGUMENT");
    assert.match(rate.message, new RegExp(`^config ${config}: rate "20Mb" is ambiguous`));
    const interval = assertThrowsCode(
      () => settings.number("interval", 30, "seconds"),
      "INVALID_ARGUMENT",
    );
    assert.match(interval.message, /interval must be a number of seconds, 0 or more/);
  });
});

Deno.test('an agent starts from {"volume": "a=IMAGE", "interval": 5, "rate": 2500000}', async () => {
  const { controlFetch, freePort, PresyncProcess } = await import("../../fixtures/cluster.ts");
  const { writeNewKey } = await import("../key_file.ts");
  const dir = await Deno.makeTempDir({ prefix: "presync-config-" });
  const config = {
    volume: `a=${dir}/a.img`,
    interval: 5,
    rate: 2_500_000,
    "idle-timeout": 6,
    to: `127.0.0.1:${freePort()}`,
    "key-file": `${dir}/key`,
    state: `${dir}/state`,
    control: `${dir}/agent.sock`,
  };
  await writeNewKey(`${dir}/key`);
  await Deno.writeFile(`${dir}/a.img`, new Uint8Array(65536));
  await Deno.writeTextFile(`${dir}/agent.json`, JSON.stringify(config));
  const agent = new PresyncProcess(["agent", "--config", `${dir}/agent.json`]);
  try {
    const deadline = Date.now() + 30_000;
    let names: string[] = [];
    while (names.length === 0) {
      assert.ok(Date.now() < deadline && !agent.exited, agent.output);
      const status = await controlFetch(config.control, "GET", "/status")
        .then((r) => r.json(), () => null);
      names = (status?.volumes ?? []).map((v: { name: string }) => v.name);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepStrictEqual(names, ["a"]);
  } finally {
    assert.equal((await agent.kill("SIGTERM")).code, 0, agent.output);
    await Deno.remove(dir, { recursive: true });
  }
});
