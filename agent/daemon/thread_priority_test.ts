import assert from "node:assert/strict";
import { setThreadNice, threadId, threadNice } from "./thread_priority.ts";

/** Nice values of every thread of this process but `except`. */
function otherThreads(except: number): Map<number, number | null> {
  const out = new Map<number, number | null>();
  for (const entry of Deno.readDirSync("/proc/self/task")) {
    const tid = Number(entry.name);
    if (tid !== except) out.set(tid, threadNice(tid));
  }
  return out;
}

Deno.test({
  name: "setThreadNice changes only the calling thread; values past 19 are clamped",
  // Root, so the test can put its thread back where it was.
  ignore: Deno.build.os !== "linux" || Deno.uid?.() !== 0,
  fn() {
    const tid = threadId();
    assert.ok(tid !== null, "FFI is available (tests run with -A)");
    const before = threadNice(tid)!;
    const others = otherThreads(tid);
    assert.ok(others.size > 0, "Deno runs more threads than this one");
    try {
      assert.equal(setThreadNice(before + 3), true);
      assert.equal(threadNice(tid), before + 3);
      for (const [other, nice] of otherThreads(tid)) {
        if (others.has(other)) assert.equal(nice, others.get(other), `thread ${other}`);
      }
      assert.equal(setThreadNice(99), true, "clamped to 19 by the kernel");
      assert.equal(threadNice(tid), 19);
    } finally {
      assert.equal(setThreadNice(before), true);
    }
    assert.equal(threadNice(tid), before);
  },
});

Deno.test({
  name: "setThreadNice below what RLIMIT_NICE allows is refused, not thrown (unprivileged)",
  // As root any value is permitted (and root's deno binary may not run as another user).
  ignore: Deno.build.os !== "linux" || Deno.uid?.() === 0,
  async fn() {
    // A child at nice 10 without privileges may not return to 0.
    const script = `
      import { setThreadNice, threadId, threadNice } from ${
      JSON.stringify(new URL("./thread_priority.ts", import.meta.url).href)
    };
      console.log(JSON.stringify({ set: setThreadNice(0), nice: threadNice(threadId()) }));`;
    const out = await new Deno.Command("nice", {
      args: ["-n", "10", Deno.execPath(), "eval", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(text.trim()), { set: false, nice: 10 });
  },
});
