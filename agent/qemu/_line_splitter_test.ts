import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { LineSplitter } from "./_line_splitter.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("lines split across chunks come out whole, in order, without CR or LF", () => {
  const splitter = new LineSplitter(64);
  assert.deepEqual(splitter.push(bytes('{"a":')), []);
  assert.equal(splitter.pendingBytes, 5);
  assert.deepEqual(splitter.push(bytes('1}\r\n{"b":2}\n{"c"')), ['{"a":1}', '{"b":2}']);
  assert.deepEqual(splitter.push(bytes(":3}\n")), ['{"c":3}']);
  assert.equal(splitter.pendingBytes, 0);
});

Deno.test("a multi-byte character split between chunks decodes intact", () => {
  const splitter = new LineSplitter(64);
  const text = bytes("désolé\n");
  assert.deepEqual(splitter.push(text.subarray(0, 2)), []);
  assert.deepEqual(splitter.push(text.subarray(2)), ["désolé"]);
});

Deno.test("a line longer than the bound is a protocol violation, even without a newline", () => {
  const splitter = new LineSplitter(8);
  assert.deepEqual(splitter.push(bytes("12345678\n")), ["12345678"]);
  splitter.push(bytes("12345"));
  const err = assertThrowsCode(() => splitter.push(bytes("6789")), "PROTOCOL_VIOLATION");
  assert.match(err.message, /longer than 8 bytes/);
});
