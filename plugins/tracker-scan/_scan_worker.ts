/// <reference lib="deno.worker" />
// A worker of ScanWorkers: opens the image at the beginning of each pass, then reads each
// piece it is sent with `pread` on this thread (the kernel's copy out of the page cache lands
// in this worker's WASM memory, still in this core's cache when the pre-filter reads it) and
// answers with the piece's verdicts. Messages are handled one at a time, in the order they
// arrive. The key and the piece buffer are kept from one pass to the next.

import * as nodeFs from "node:fs";
import { CoreBuffer, PrefilterKey } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { toIoError } from "../../agent/fs/io_error.ts";
import { type Examined, examinePiece, type PiecePlan, readPiece } from "./_piece_examine.ts";
import type { ScanWorkerReply, ScanWorkerRequest, ScanWorkerSetup } from "./_scan_workers.ts";

interface Opened {
  setup: ScanWorkerSetup;
  fd: number;
  key: PrefilterKey | null;
  buffer: CoreBuffer;
}

const NOT_OPEN = new PresyncError(
  ErrorCode.INVALID_ARGUMENT,
  "a scan worker was sent a piece outside a pass",
);
let opened: Opened | PresyncError = NOT_OPEN;
let kept: { secret: Uint8Array | null; key: PrefilterKey | null; buffer: CoreBuffer | null } = {
  secret: null,
  key: null,
  buffer: null,
};
let queue = Promise.resolve();

const sameBytes = (a: Uint8Array | null, b: Uint8Array | null) =>
  a === b || (a !== null && b !== null && a.length === b.length && a.every((x, i) => x === b[i]));

function begin(setup: ScanWorkerSetup): Opened | PresyncError {
  try {
    if (!sameBytes(kept.secret, setup.secret) || kept.key?.maxBlockBytes !== setup.blockSize) {
      kept.key?.free();
      kept = {
        ...kept,
        secret: setup.secret,
        key: setup.secret && new PrefilterKey(setup.secret, setup.blockSize),
      };
    }
    if (kept.buffer?.size !== setup.pieceBytes) {
      kept.buffer?.free();
      kept.buffer = new CoreBuffer(setup.pieceBytes);
    }
    const fd = nodeFs.openSync(setup.path, "r");
    return { setup, fd, key: kept.key, buffer: kept.buffer };
  } catch (err) {
    return toIoError(err, `open source image ${setup.path}`);
  }
}

function end(): void {
  if (!(opened instanceof PresyncError)) nodeFs.closeSync(opened.fd);
  opened = NOT_OPEN;
}

/** `pread` until `into` is full or the file ends. */
function readAt(fd: number, position: number, into: Uint8Array): number {
  let total = 0;
  while (total < into.length) {
    const n = nodeFs.readSync(fd, into, total, into.length - total, position + total);
    if (n === 0) break;
    total += n;
  }
  return total;
}

async function pieces(id: number, plans: PiecePlan[]): Promise<ScanWorkerReply> {
  try {
    if (opened instanceof PresyncError) throw opened;
    const { setup, fd, key, buffer } = opened;
    const examined: Examined[] = [];
    for (const plan of plans) {
      const bytesRead = await buffer.fill(
        plan.length,
        (into) =>
          readPiece(plan, into, setup.sizeBytes, (position, part) => {
            try {
              return readAt(fd, position, part);
            } catch (err) {
              throw toIoError(err, `read source image ${setup.path}`);
            }
          }),
      );
      const found = examinePiece(plan, buffer.view(plan.length), setup.blockSize, key);
      examined.push({ ...found, bytesRead });
    }
    return { op: "done", id, examined };
  } catch (err) {
    const typed = err instanceof PresyncError
      ? err
      : new PresyncError(ErrorCode.WORKER_FAILED, `a scan worker failed: ${err}`);
    return {
      op: "failed",
      id,
      code: typed.code,
      message: typed.message,
      retryable: typed.retryable,
    };
  }
}

self.onmessage = (event: MessageEvent<ScanWorkerRequest>) => {
  const request = event.data;
  queue = queue.then(async () => {
    if (request.op === "begin") {
      end();
      opened = begin(request.setup);
    } else if (request.op === "end") end();
    else {
      const reply = await pieces(request.id, request.plans);
      const tables = reply.op === "done" ? reply.examined.flatMap((e) => e.table ?? []) : [];
      self.postMessage(reply, tables.map((table) => table.buffer as ArrayBuffer));
    }
  });
};
