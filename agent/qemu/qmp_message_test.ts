import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { decodeQmpMessage, encodeQmpCommand } from "./qmp_message.ts";

Deno.test("QEMU 7.2's greeting decodes into its version and capabilities", () => {
  const greeting = decodeQmpMessage(
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, ' +
      '"package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}',
  );
  assert.deepEqual(greeting, {
    kind: "greeting",
    version: { major: 7, minor: 2, micro: 22, package: "Debian 1:7.2+dfsg-7" },
    capabilities: ["oob"],
  });
});

Deno.test("returns, errors and events decode with their ids, classes and timestamps", () => {
  assert.deepEqual(decodeQmpMessage('{"return": {"status": "running"}, "id": "presync-3"}'), {
    kind: "return",
    id: "presync-3",
    value: { status: "running" },
  });
  assert.deepEqual(
    decodeQmpMessage('{"id": "x", "error": {"class": "CommandNotFound", "desc": "no"}}'),
    { kind: "error", id: "x", errorClass: "CommandNotFound", desc: "no" },
  );
  assert.deepEqual(
    decodeQmpMessage(
      '{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}',
    ),
    { kind: "event", event: "STOP", data: {}, timestampMs: 1700000000250 },
  );
});

Deno.test("anything that is not QMP is refused with PROTOCOL_VIOLATION", () => {
  for (
    const line of [
      "not json",
      "[1,2]",
      '{"hello": 1}',
      '{"QMP": {"version": {"qemu": {"major": "7"}}, "capabilities": []}}',
      '{"error": {"class": 1}}',
      '{"return": {}, "id": 5}',
      '{"event": "STOP", "data": [1]}',
    ]
  ) {
    const err = assertThrowsCode(() => decodeQmpMessage(line), "PROTOCOL_VIOLATION");
    assert.match(err.message, /QMP peer/);
  }
});

Deno.test("a command encodes as one line with its id, arguments only when given", () => {
  assert.equal(encodeQmpCommand("presync-1", "stop"), '{"execute":"stop","id":"presync-1"}\n');
  assert.deepEqual(
    JSON.parse(encodeQmpCommand("presync-2", "cont", { a: 1 })),
    { execute: "cont", arguments: { a: 1 }, id: "presync-2" },
  );
});
