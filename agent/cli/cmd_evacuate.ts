import type { EvacuateReport } from "../daemon/source_agent.ts";
import { parseCommand } from "./_args.ts";
import { callControl } from "./_control_client.ts";
import { Progress } from "./_progress.ts";
import { volumeAction, volumeActionUsage } from "./_volume_action.ts";
import { ExitCode } from "./exit_codes.ts";

export const EVACUATE_USAGE = volumeActionUsage(
  "evacuate",
  "Lifts every limit, runs the agent's evacuate hook, cuts the final generation, sends it at\n" +
    "full speed, waits for the commit and verifies the Merkle roots. Exit 3 when not verified",
);

/** `presync evacuate NAME`. */
export async function cmdEvacuate(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("evacuate", args, {
    control: { type: "string" },
    "key-file": { type: "string" },
    json: { type: "boolean" },
  });
  // Progress from the agent's status while the evacuation runs (not with --json).
  const progress = values.json ? null : new Progress(`evacuating ${positionals[0] ?? ""}`);
  let polling = progress !== null;
  const poll = (async () => {
    while (polling) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      if (!polling) break;
      const status = await callControl(values.control, values["key-file"], "GET", "/status").catch(
        () => null,
      );
      const v = (status?.volumes as
        | { name: string; generationBytes: number; pendingBytes: number }[]
        | undefined)?.find((x) => x.name === positionals[0]);
      if (v && v.generationBytes > 0) {
        progress!.update(v.generationBytes - v.pendingBytes, v.generationBytes);
      }
    }
  })();
  let outcome;
  try {
    outcome = await volumeAction("evacuate", args);
  } finally {
    polling = false;
    await poll;
    progress?.done();
  }
  const { result, json } = outcome;
  const report = result as EvacuateReport;
  if (json) console.log(JSON.stringify(report));
  else {
    console.log(
      `${report.volume}: evacuated in ${
        report.seconds.toFixed(2)
      } s, ${report.bytesSent} bytes sent, ` +
        `generation ${report.generation}, root ${report.merkleRoot}: ` +
        (report.verified ? "verified" : "NOT VERIFIED"),
    );
  }
  return report.verified ? ExitCode.OK : ExitCode.VERIFY_MISMATCH;
}
