import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { StreamTable } from "./stream_table.ts";

Deno.test("stream table: the client opens odd ids, the server even ids, in order", () => {
  const client = new StreamTable(true, "peer");
  const server = new StreamTable(false, "peer");
  assert.deepEqual([client.allocateLocalId(), client.allocateLocalId()], [1, 3]);
  assert.deepEqual([server.allocateLocalId(), server.allocateLocalId()], [2, 4]);
});

Deno.test("stream table: a peer OPEN of the wrong parity or a reused id is a violation", () => {
  const server = new StreamTable(false, "peer");
  server.checkPeerOpen(1);
  server.checkPeerOpen(5);
  assertThrowsCode(() => server.checkPeerOpen(3), "PROTOCOL_VIOLATION");
  assertThrowsCode(() => server.checkPeerOpen(6), "PROTOCOL_VIOLATION");
});

Deno.test("stream table: frames for closed ids are ignored, for never-opened ids refused", () => {
  const server = new StreamTable(false, "peer");
  server.checkPeerOpen(1);
  assert.equal(server.lookup(1), undefined); // opened, already forgotten
  assertThrowsCode(() => server.lookup(3), "PROTOCOL_VIOLATION");
  assertThrowsCode(() => server.lookup(2), "PROTOCOL_VIOLATION"); // own id never allocated
  server.allocateLocalId();
  assert.equal(server.lookup(2), undefined);
});
