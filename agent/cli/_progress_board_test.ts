import assert from "node:assert/strict";
import { ProgressBoard } from "./_progress_board.ts";

Deno.test("progress board: a line printed while no bar is shown is written at once", () => {
  const written: string[] = [];
  const board = new ProgressBoard({ write: (text: string) => written.push(text) });
  try {
    board.print("link_down retrying");
    assert.ok(written.join("").includes("link_down retrying\n"), JSON.stringify(written));
  } finally {
    board.stop();
  }
});
