/// <reference lib="deno.worker" />
// A worker of BlockEntriesPool: computes manifest entries for the pieces it is sent and
// hands the piece's buffer back with them (both transferred, never copied).

import { blockEntries } from "./hash_blocks.ts";

interface Job {
  id: number;
  buffer: ArrayBuffer;
  length: number;
  blockSize: number;
}

self.onmessage = (event: MessageEvent<Job>) => {
  const { id, buffer, length, blockSize } = event.data;
  const entries = blockEntries(new Uint8Array(buffer, 0, length), blockSize);
  self.postMessage({ id, buffer, entries }, [buffer, entries.buffer as ArrayBuffer]);
};
