import type { VolumeListing } from "../store/volume_listing.ts";
import { volumeListing } from "../store/volume_listing.ts";
import { parseCommand } from "./_args.ts";
import { callControl } from "./_control_client.ts";
import { storeFromFlag } from "./_store.ts";
import { ExitCode } from "./exit_codes.ts";

export const VOLUMES_USAGE = `presync volumes [--control NAME|PATH] [--json]
presync volumes --store DIR|rbd:POOL [--state DIR] [--json]

Lists the replicas at the destination: name, size, committed generation, the age of that
generation's cut (its RPO), the storage the replica occupies, and its state (initialising
while its first generation is being seeded; connected while a source agent syncs it;
exported while an export serves it), and for a store keeping generations (serve --keep N:
rbd snapshots, directory undo logs) the committed generations it keeps with their time and size. The first form asks the running \`presync serve\`
(its control socket, serve.sock in /run/presync/serve for root, or the one --control
names); the second reads the store directly (safe while
serve runs: it only reads).

  --json              print {"volumes": [...]} as JSON`;

/** `presync volumes`. */
export async function cmdVolumes(args: string[]): Promise<number> {
  const { values } = parseCommand("volumes", args, {
    store: { type: "string" },
    state: { type: "string" },
    control: { type: "string" },
    json: { type: "boolean" },
  });
  let volumes: VolumeListing[];
  if (values.store !== undefined) {
    volumes = (await storeFromFlag({ store: values.store, state: values.state }).summaries()).map((
      s,
    ) => volumeListing(s));
  } else {
    const reply = await callControl({ role: "serve", control: values.control }, "GET", "/volumes");
    volumes = reply.volumes as VolumeListing[];
  }
  if (values.json) console.log(JSON.stringify({ volumes }));
  else console.log(formatVolumes(volumes));
  return ExitCode.OK;
}

/** The listing as a table for people. */
export function formatVolumes(volumes: VolumeListing[]): string {
  if (volumes.length === 0) return "no volumes";
  const rows = [["NAME", "SIZE", "GENERATION", "AGE", "ALLOCATED", "STATE"]];
  for (const v of volumes) {
    const state = [
      v.initialising ? "initialising" : v.committedGeneration > 0 ? "committed" : "empty",
      v.sourceConnected ? "connected" : "",
      v.exported ? "exported" : "",
    ].filter(Boolean).join(", ");
    rows.push([
      v.name,
      bytes(v.sizeBytes),
      String(v.committedGeneration),
      v.ageSeconds === null ? "-" : age(v.ageSeconds),
      v.allocatedBytes === null ? "-" : bytes(v.allocatedBytes),
      state,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const table = rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  // Kept generations (serve --keep N), one line per volume that has any.
  for (const v of volumes) {
    if (!v.generations?.length) continue;
    table.push(
      `${v.name}: generations kept ` +
        v.generations.map((g) =>
          `${g.generation} (${new Date(g.createdAtMs).toISOString()}, ${bytes(g.sizeBytes)})`
        ).join(", "),
    );
  }
  return table.join("\n");
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) value /= 1024, unit++;
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function age(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
