import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { ReplyWriter } from "./_reply_writer.ts";

function recorder(): { writes: Uint8Array[]; writable: WritableStream<Uint8Array> } {
  const writes: Uint8Array[] = [];
  return { writes, writable: new WritableStream({ write: (chunk) => void writes.push(chunk) }) };
}

Deno.test("replies sent while held go out in one write, in order, each whole", async () => {
  const { writes, writable } = recorder();
  const replies = new ReplyWriter(writable.getWriter());
  replies.hold();
  const sent = [
    replies.send(new Uint8Array([1]), new Uint8Array([2, 3])),
    replies.send(new Uint8Array([4])),
  ];
  await Promise.resolve();
  assert.equal(writes.length, 0);
  replies.release();
  await Promise.all(sent);
  assert.deepEqual(writes, [new Uint8Array([1, 2, 3, 4])]);
});

Deno.test("a part larger than the join limit is written as it is, not copied", async () => {
  const { writes, writable } = recorder();
  const replies = new ReplyWriter(writable.getWriter());
  const big = new Uint8Array(1 << 20);
  replies.hold();
  const sent = [replies.send(new Uint8Array([9])), replies.send(new Uint8Array([8]), big)];
  replies.release();
  await Promise.all(sent);
  assert.equal(writes.length, 2);
  assertBytesEqual(writes[0], new Uint8Array([9, 8]), "the first write");
  assert.equal(writes[1], big);
});

Deno.test("a failed write rejects the replies waiting and every later one", async () => {
  const replies = new ReplyWriter(
    new WritableStream<Uint8Array>({ write: () => Promise.reject(new Error("peer gone")) })
      .getWriter(),
  );
  await assert.rejects(replies.send(new Uint8Array([1])), /peer gone/);
  await assert.rejects(replies.send(new Uint8Array([2])), /peer gone/);
});
