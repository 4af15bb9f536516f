import { volumeAction, volumeActionUsage } from "./_volume_action.ts";
import { ExitCode } from "./exit_codes.ts";

export const EVACUATE_USAGE = volumeActionUsage(
  "evacuate",
  "Lifts every limit, runs the agent's evacuate hook, cuts the final generation, sends it at\n" +
    "full speed, waits for the commit and verifies the Merkle roots. Exit 3 when not verified",
);

/** `presync evacuate NAME`. */
export async function cmdEvacuate(args: string[]): Promise<number> {
  const { result, json } = await volumeAction("evacuate", args);
  const report = result as {
    volume: string;
    seconds: number;
    bytesSent: number;
    generation: number;
    merkleRoot: string;
    verified: boolean;
  };
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
