import { formatBitRate, formatBytes } from "../units/mod.ts";
import { parseCommand } from "./_args.ts";
import { ControlClient, findControlSockets } from "./_control_client.ts";
import { formatDuration } from "./_progress.ts";
import { ExitCode } from "./exit_codes.ts";

export const STATUS_USAGE = `presync status [--control NAME|PATH] [--json]

Shows each volume of the running agents: state, committed generation, RPO, pending bytes,
goodput, RTT and the predicted evacuation time, with where its link speed comes from (the
last sends, the send in progress, or a short probe past --rate) and whether the writes since
the last cut are counted by the tracker or estimated; --json gives every input. Without --control, asks every agent whose
control socket is in the runtime directory (/run/presync/agent for root). Exit 5 when no
agent answers.`;

/** `presync status`. */
export async function cmdStatus(args: string[]): Promise<number> {
  const { values } = parseCommand("status", args, {
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const sockets = findControlSockets({ role: "agent", control: values.control });
  const answers: Record<string, unknown>[] = [];
  let firstError: unknown = null;
  for (const socket of sockets) {
    try {
      using client = new ControlClient(socket, "agent");
      answers.push(await client.call("GET", "/status"));
    } catch (err) {
      firstError ??= err;
    }
  }
  // Stale sockets of killed agents are skipped when another agent answers.
  if (answers.length === 0) throw firstError;
  const volumes = answers.flatMap((a) => (a.volumes ?? []) as Record<string, unknown>[]);
  if (values.json) {
    console.log(JSON.stringify({ ...answers[0], volumes }));
    return ExitCode.OK;
  }
  for (const v of volumes) console.log(describeVolume(v));
  return ExitCode.OK;
}

/** One volume's status for people: data in bytes, link speed in bits per second. */
export function describeVolume(v: Record<string, unknown>): string {
  const number = (key: string) => v[key] === null || v[key] === undefined ? null : Number(v[key]);
  const rpo = number("rpoSeconds");
  const eta = number("predictedEvacuationSeconds");
  const goodput = number("goodputBytesPerSecond");
  const rtt = number("rttMs");
  return `${v.name}: ${v.state}, generation ${v.committedGeneration}, RPO ${
    rpo === null ? "-" : formatDuration(rpo)
  }, pending ${formatBytes(number("pendingBytes") ?? 0)}` +
    (goodput ? `, goodput ${formatBitRate(goodput)}` : "") +
    (rtt !== null ? `, RTT ${rtt} ms` : "") +
    `, evacuation ≈ ${
      eta === null
        ? `unknown (${
          (v.prediction as { freshSource?: string } | null)?.freshSource === "unknown"
            ? "no write rate measured yet"
            : "link speed not measured yet"
        })`
        : formatDuration(eta)
    }${predictionBasis(v.prediction)}` +
    (v.lastError ? `; last error: ${v.lastError}` : "");
}

/** What each `prediction.linkSource` means, for people. */
const LINK_SOURCES: Record<string, string> = {
  goodput: "link speed from the last sends",
  current_send: "link speed from the send in progress",
  probe: "link speed from a probe past --rate",
};

/** How `status` says where the count of new writes comes from (`FreshSource`). */
const FRESH_SOURCES: Record<string, string> = {
  tracker: "new writes counted by the tracker",
  scan: "new writes from the last background scan and its rate since",
  scan_write_rate: "new writes from the last background scan and the write rate since",
  write_rate: "new writes estimated from the write rate",
};

/** Where the prediction's figures come from, e.g. " (link speed from a probe past --rate; …)". */
function predictionBasis(prediction: unknown): string {
  if (typeof prediction !== "object" || prediction === null) return "";
  const { linkSource, freshSource } = prediction as Record<string, unknown>;
  const parts: string[] = [];
  if (typeof linkSource === "string" && linkSource in LINK_SOURCES) {
    parts.push(LINK_SOURCES[linkSource]);
  }
  if (typeof freshSource === "string" && freshSource in FRESH_SOURCES) {
    parts.push(FRESH_SOURCES[freshSource]);
  }
  return parts.length ? ` (${parts.join("; ")})` : "";
}
