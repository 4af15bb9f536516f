import { syncLocal } from "../sync/local_sync.ts";
import { DEFAULT_BLOCK_SIZE } from "../volume/volume_identity.ts";
import { parseRate, parseSize, UNLIMITED } from "../units/mod.ts";
import { parseCommand, required } from "./_args.ts";
import { ExitCode } from "./exit_codes.ts";

export const SYNC_USAGE = `presync sync --local SOURCE_IMAGE STORE_DIR --volume NAME [options]

Syncs a local image into a local replica store in one process: finishes a generation an
earlier run left pending, then cuts, sends and commits a new one.

  --state DIR         source state directory (default: SOURCE_IMAGE.presync-state)
  --block-size SIZE   block size of a new volume (default 64k; 4k to 4m, power of two)
  --read-rate RATE    cap on source reads, e.g. 200MB/s (default unlimited)
  --json              print the report as JSON`;

/** `presync sync --local …`. */
export async function cmdSync(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("sync", args, {
    local: { type: "boolean" },
    volume: { type: "string" },
    state: { type: "string" },
    "block-size": { type: "string" },
    "read-rate": { type: "string" },
    json: { type: "boolean" },
  });
  required("sync", "--local (network sync is `presync agent`)", values.local || undefined);
  const image = required("sync", "SOURCE_IMAGE", positionals[0]);
  const store = required("sync", "STORE_DIR", positionals[1]);
  const volume = required("sync", "--volume NAME", values.volume);
  const readRate = values["read-rate"] === undefined
    ? UNLIMITED
    : parseRate("--read-rate", values["read-rate"]);
  const reports = await syncLocal({
    imagePath: image,
    storeDir: store,
    volume,
    stateDir: values.state ?? `${image}.presync-state`,
    blockSize: values["block-size"] === undefined
      ? DEFAULT_BLOCK_SIZE
      : parseSize("--block-size", values["block-size"]),
    readRateBytesPerSecond: readRate === UNLIMITED ? 0 : readRate,
  });
  if (values.json) {
    console.log(JSON.stringify(reports.map(({ sentExtents: _, ...r }) => r)));
  } else {
    for (const r of reports) {
      console.log(
        `${volume}: generation ${r.generation} committed${r.resumed ? " (resumed)" : ""}: ` +
          `${r.blocksSent} blocks sent (${r.bytesSent} data bytes, ${r.zeroBlocks} zero), ` +
          `${r.alreadyStaged} already staged, root ${r.merkleRoot}`,
      );
    }
  }
  return ExitCode.OK;
}
