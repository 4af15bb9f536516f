import assert from "node:assert/strict";
import { Progress } from "./_progress.ts";

Deno.test("progress prints a plain line (not a bar) when not on a terminal", () => {
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    const progress = new Progress("vm generation 1", false);
    progress.update(512 * 1024, 2 * 1024 * 1024);
    progress.update(1024 * 1024, 2 * 1024 * 1024); // within 5 s: not printed again
    progress.done();
  } finally {
    console.error = original;
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^vm generation 1 +25% 0\.5\/2\.0 MiB/);
  assert.doesNotMatch(lines[0], /\[#/);
});
