/**
 * The `presync` command: one binary for every site.
 *
 *     presync keygen --out FILE
 *     presync serve --store DIR --listen HOST:PORT --key-file FILE
 *     presync agent --volume NAME=IMAGE --to HOST:PORT --key-file FILE --state DIR
 *     presync status | evacuate NAME | pause NAME | resume NAME | verify NAME
 *     presync sync --local SOURCE_IMAGE STORE_DIR --volume NAME
 *
 * @module
 */

import { AGENT_USAGE, cmdAgent } from "./cli/cmd_agent.ts";
import { cmdEvacuate, EVACUATE_USAGE } from "./cli/cmd_evacuate.ts";
import { EXPORT_COMMAND } from "./cli/cmd_export.ts";
import { cmdKeygen, KEYGEN_USAGE } from "./cli/cmd_keygen.ts";
import { cmdServe, SERVE_USAGE } from "./cli/cmd_serve.ts";
import { cmdStatus, STATUS_USAGE } from "./cli/cmd_status.ts";
import { cmdSync, SYNC_USAGE } from "./cli/cmd_sync.ts";
import { pauseOrResume, volumeActionUsage } from "./cli/_volume_action.ts";
import { cmdVerify, VERIFY_USAGE } from "./cli/cmd_verify.ts";
import { cmdVolumes, VOLUMES_USAGE } from "./cli/cmd_volumes.ts";
import { cmdDelete, DELETE_USAGE } from "./cli/cmd_delete.ts";
import { ExitCode, exitCodeFor } from "./cli/exit_codes.ts";
import { PresyncError } from "./errors.ts";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; usage: string }> = {
  keygen: { run: cmdKeygen, usage: KEYGEN_USAGE },
  serve: { run: cmdServe, usage: SERVE_USAGE },
  agent: { run: cmdAgent, usage: AGENT_USAGE },
  status: { run: cmdStatus, usage: STATUS_USAGE },
  evacuate: { run: cmdEvacuate, usage: EVACUATE_USAGE },
  pause: {
    run: (args) => pauseOrResume("pause", args),
    usage: volumeActionUsage("pause", "Stops sending a volume; tracking goes on"),
  },
  resume: {
    run: (args) => pauseOrResume("resume", args),
    usage: volumeActionUsage("resume", "Resumes sending a paused volume"),
  },
  sync: { run: cmdSync, usage: SYNC_USAGE },
  verify: { run: cmdVerify, usage: VERIFY_USAGE },
  export: EXPORT_COMMAND,
  volumes: { run: cmdVolumes, usage: VOLUMES_USAGE },
  delete: { run: cmdDelete, usage: DELETE_USAGE },
};

/** Runs the command line `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  const command = COMMANDS[name ?? ""];
  if (!command || rest.includes("--help") || rest.includes("-h")) {
    const text = command?.usage ??
      `usage: presync <command> [options]\n\ncommands: ${Object.keys(COMMANDS).join(", ")}\n` +
        `run \`presync <command> --help\` for a command's options`;
    (command || name === undefined || name === "--help" ? console.log : console.error)(text);
    return command || name === undefined || name === "--help" ? ExitCode.OK : ExitCode.USAGE;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    const code = err instanceof PresyncError ? ` [${err.code}]` : "";
    console.error(`presync ${name}: ${err instanceof Error ? err.message : err}${code}`);
    return exitCodeFor(err);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
