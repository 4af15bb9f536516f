/**
 * The `presync` command: one binary for every site.
 *
 *     presync keygen --out FILE
 *     presync serve --store DIR --listen HOST:PORT --key-file FILE
 *     presync agent --volume NAME=IMAGE --to HOST:PORT --key-file FILE --state DIR
 *     presync status | evacuate NAME | pause NAME | resume NAME | verify NAME
 *     presync sync --local SOURCE_IMAGE STORE_DIR --volume NAME
 *     presync failback NAME --adopt IMAGE … | presync failback NAME --to HOST:PORT …
 *     presync help [COMMAND] | presync --version
 *
 * @module
 */

import { AGENT_USAGE, cmdAgent } from "./cli/cmd_agent.ts";
import { cmdEvacuate, EVACUATE_USAGE } from "./cli/cmd_evacuate.ts";
import { EXPORT_COMMAND } from "./cli/cmd_export.ts";
import { cmdFailback, FAILBACK_USAGE } from "./cli/cmd_failback.ts";
import { cmdMigrate, MIGRATE_USAGE } from "./cli/cmd_migrate.ts";
import { cmdKeygen, KEYGEN_USAGE } from "./cli/cmd_keygen.ts";
import { cmdServe, SERVE_USAGE } from "./cli/cmd_serve.ts";
import { cmdStatus, STATUS_USAGE } from "./cli/cmd_status.ts";
import { cmdSync, SYNC_USAGE } from "./cli/cmd_sync.ts";
import { pauseOrResume, volumeActionUsage } from "./cli/_volume_action.ts";
import { cmdVerify, VERIFY_USAGE } from "./cli/cmd_verify.ts";
import { closest } from "./cli/_suggest.ts";
import { cmdVolumes, VOLUMES_USAGE } from "./cli/cmd_volumes.ts";
import { cmdDelete, DELETE_USAGE } from "./cli/cmd_delete.ts";
import { cmdRollback, ROLLBACK_USAGE } from "./cli/cmd_rollback.ts";
import { ExitCode, exitCodeFor } from "./cli/exit_codes.ts";
import { PresyncError } from "./errors.ts";
import { VERSION } from "./version.ts";

/** A subcommand: runs its arguments, returns the exit code; `usage` is its help. */
interface Command {
  run: (args: string[]) => Promise<number>;
  usage: string;
}

const COMMANDS: Record<string, Command> = {
  keygen: { run: cmdKeygen, usage: KEYGEN_USAGE },
  serve: { run: cmdServe, usage: SERVE_USAGE },
  agent: { run: cmdAgent, usage: AGENT_USAGE },
  status: { run: cmdStatus, usage: STATUS_USAGE },
  evacuate: { run: cmdEvacuate, usage: EVACUATE_USAGE },
  pause: {
    run: (args) => pauseOrResume("pause", args),
    usage: volumeActionUsage("pause", "Stops sending a volume; tracking goes on."),
  },
  resume: {
    run: (args) => pauseOrResume("resume", args),
    usage: volumeActionUsage("resume", "Resumes sending a paused volume."),
  },
  sync: { run: cmdSync, usage: SYNC_USAGE },
  verify: { run: cmdVerify, usage: VERIFY_USAGE },
  export: EXPORT_COMMAND,
  migrate: { run: cmdMigrate, usage: MIGRATE_USAGE },
  failback: { run: cmdFailback, usage: FAILBACK_USAGE },
  volumes: { run: cmdVolumes, usage: VOLUMES_USAGE },
  delete: { run: cmdDelete, usage: DELETE_USAGE },
  rollback: { run: cmdRollback, usage: ROLLBACK_USAGE },
};

/** The first sentence of a usage text's description: what `presync help` lists. */
function summary(usage: string): string {
  const description = usage.split("\n\n")[1] ?? "";
  return description.replace(/\s+/g, " ").split(/(?<=[.:])\s/)[0].replace(/[.:]$/, "");
}

function overview(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return `presync ${VERSION}: keeps VM disks pre-synchronized across a WAN

usage: presync <command> [options]

${
    Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${summary(c.usage)}`)
      .join("\n")
  }

presync help <command>   a command's options (or presync <command> --help)
presync --version        the version
Exit codes: 0 success, 1 failure, 2 bad command line or configuration, 3 verify mismatch,
4 authentication failed, 5 peer or agent unreachable.`;
}

function unknownCommand(name: string): PresyncError {
  const near = closest(name, Object.keys(COMMANDS));
  return new PresyncError(
    "INVALID_ARGUMENT",
    `unknown command ${JSON.stringify(name)}${
      near ? ` (did you mean ${near}?)` : ""
    }; run presync help for the list`,
  );
}

/** Runs the command line `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === "--version" || name === "-V" || name === "version") {
    console.log(`presync ${VERSION} (deno ${Deno.version.deno})`);
    return ExitCode.OK;
  }
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? rest[0] : undefined;
    if (topic === undefined) console.log(overview());
    else if (COMMANDS[topic]) console.log(COMMANDS[topic].usage);
    else return report("help", unknownCommand(topic), false);
    return ExitCode.OK;
  }
  const command = COMMANDS[name];
  const json = rest.includes("--json");
  if (!command) return report(name, unknownCommand(name), json);
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(command.usage);
    return ExitCode.OK;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    return report(name, err, json);
  }
}

/**
 * Says why a command failed, on stderr; with `--json` also as one JSON object on stdout
 * (`{"ok": false, "code", "message", "exitCode"}`), so scripts read one stream. Returns the
 * exit code.
 */
function report(name: string, err: unknown, json: boolean): number {
  const exitCode = exitCodeFor(err);
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof PresyncError ? err.code : null;
  console.error(`presync ${name}: ${message}${code ? ` [${code}]` : ""}`);
  if (json) console.log(JSON.stringify({ ok: false, code, message, exitCode }));
  return exitCode;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
