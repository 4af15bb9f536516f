import type { EvacuateReport } from "../daemon/source_agent.ts";
import type { EvacuationBreakdown } from "../daemon/evacuation.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { formatBytes } from "../units/mod.ts";
import { parseCommand, required } from "./_args.ts";
import { connectControl, type ControlClient } from "./_control_client.ts";
import { ProgressBoard } from "./_progress_board.ts";
import { ExitCode } from "./exit_codes.ts";

/** Default of `--timeout`: longer than the agent's longest reconnect backoff (30 s) twice. */
export const DEFAULT_EVACUATE_TIMEOUT_SECONDS = 120;

/** How often the command asks the agent how the evacuation goes. */
const POLL_MS = 500;

export const EVACUATE_USAGE =
  `presync evacuate NAME [--control NAME|PATH] [--timeout SECONDS] [--json]

Lifts every limit, runs the agent's evacuate hook, cuts the final generation, sends it at
full speed, waits for the commit and verifies the Merkle roots. Says what it is waiting for
(the link, the hook, the final cut, the commit); on a terminal it shows a progress bar.

  --control NAME|PATH the agent's control socket (default: the agent that has NAME)
  --timeout SECONDS   give up (exit 5) when the agent or the destination has been
                      unreachable this long (default ${DEFAULT_EVACUATE_TIMEOUT_SECONDS}); the evacuation stays requested
                      and the agent finishes it when the link is back
  --json              print the report (or the error) as one JSON object on stdout, with
                      its breakdown: pause, scan, send, commit, verify seconds; bytes

Exit 0 when the final generation committed and verified, 3 when not verified, 5 when the
agent or the destination is unreachable.`;

/** What a volume's status says the evacuation waits for, and whether that is the link. */
interface Wait {
  message: string;
  unreachable: boolean;
}

/** What each step of the agent's evacuation (`status.evacuation.step`) is doing. */
const STEP_MESSAGES: Record<string, string> = {
  requested: "evacuation requested: lifting every limit",
  waiting_for_link:
    "waiting for the destination: the agent has no link to it and keeps reconnecting",
  hook: "running the evacuate hook (pausing the VM)",
  hook_done: "the evacuate hook is done: cutting the final generation",
  final_cut: "final cut: finding the last changes",
  sending: "sending at full speed",
  commit: "waiting for the destination to commit the final generation",
  verify: "final generation committed: checking the Merkle roots",
  done: "done",
  failed: "the evacuation failed",
};

/**
 * What the evacuation of `v` waits for now, from its status (`null`: the agent did not
 * answer); `sentFinal` says whether the final generation was seen on its way. The agent's
 * own step (`evacuation.step`, with its `detail`) is shown when it reports one.
 */
export function describeWait(v: Record<string, unknown> | null, sentFinal: boolean): Wait {
  if (v === null) {
    return {
      message: "waiting for the agent: its control socket does not answer",
      unreachable: true,
    };
  }
  const evacuation = v.evacuation as { step?: unknown; detail?: unknown } | null | undefined;
  if (evacuation && typeof evacuation.step === "string" && evacuation.step in STEP_MESSAGES) {
    const unreachable = evacuation.step === "waiting_for_link" || v.state === "disconnected";
    const detail = typeof evacuation.detail === "string" ? ` (${evacuation.detail})` : "";
    return { message: STEP_MESSAGES[evacuation.step] + detail, unreachable };
  }
  switch (v.state) {
    case "opening":
      return {
        message: "the agent is opening the volume (reading its image to find what changed " +
          "while it was stopped); the evacuation follows",
        unreachable: false,
      };
    case "starting":
    case "disconnected":
      return {
        message: "waiting for the destination: the agent has no link to it and keeps reconnecting",
        unreachable: true,
      };
    case "sending":
      return {
        message: "sending the generation cut before the evacuation, at full speed",
        unreachable: false,
      };
    case "scanning":
      return { message: "final cut: finding the last changes", unreachable: false };
    case "evacuating":
      return { message: "sending the final generation", unreachable: false };
    case "evacuated":
      return { message: "final generation committed: verifying", unreachable: false };
    default:
      return sentFinal
        ? {
          message: "waiting for the commit and the check of the Merkle roots",
          unreachable: false,
        }
        : {
          message: "preparing the final cut (the evacuate hook runs first, if any)",
          unreachable: false,
        };
  }
}

/** `presync evacuate NAME`. */
export async function cmdEvacuate(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("evacuate", args, {
    control: { type: "string" },
    timeout: { type: "string" },
    json: { type: "boolean" },
  });
  const volume = required("evacuate", "NAME", positionals[0]);
  const timeoutSeconds = Number(values.timeout ?? DEFAULT_EVACUATE_TIMEOUT_SECONDS);
  if (!(timeoutSeconds > 0)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--timeout must be a number of seconds above 0: received ${JSON.stringify(values.timeout)}`,
    );
  }
  using client = await connectControl({ role: "agent", control: values.control, volume });
  const board = !values.json && Deno.stderr.isTerminal() ? new ProgressBoard() : null;
  const say = values.json
    ? () => {}
    : (line: string) =>
      board ? board.print(`${volume}: ${line}`) : console.error(`${volume}: ${line}`);
  let report: EvacuateReport;
  try {
    report = await evacuate(client, volume, timeoutSeconds * 1000, say, board);
  } finally {
    board?.stop();
  }
  if (values.json) console.log(JSON.stringify(report));
  else {
    console.log(
      `${report.volume}: evacuated in ${report.seconds.toFixed(2)} s, ${
        formatBytes(report.bytesSent)
      } sent, generation ${report.generation}, root ${report.merkleRoot}: ` +
        (report.verified ? "verified" : "NOT VERIFIED"),
    );
    if (report.breakdown) console.log(describeBreakdown(report.breakdown));
  }
  return report.verified ? ExitCode.OK : ExitCode.VERIFY_MISMATCH;
}

/**
 * Asks the agent to evacuate `volume` and follows it until the report arrives; throws
 * `TIMEOUT` (exit 5) once the agent or the link has been unreachable for `timeoutMs`.
 */
async function evacuate(
  client: ControlClient,
  volume: string,
  timeoutMs: number,
  say: (line: string) => void,
  board: ProgressBoard | null,
): Promise<EvacuateReport> {
  const abort = new AbortController();
  let outcome: { report: EvacuateReport } | { error: unknown } | null = null;
  const request = client.call("POST", `/volumes/${encodeURIComponent(volume)}/evacuate`, {
    signal: abort.signal,
  }).then(
    (reply) => outcome = { report: reply.result as EvacuateReport },
    (error) => outcome = { error },
  );
  let unreachableSince: number | null = null;
  let said = "";
  let sentFinal = false;
  try {
    while (true) {
      await waitFor(request, POLL_MS);
      if (outcome) break;
      const status = await client.call("GET", "/status", { signal: AbortSignal.timeout(5000) })
        .catch(() => null);
      if (outcome) break;
      const v = status === null
        ? null
        : ((status.volumes ?? []) as Record<string, unknown>[]).find((x) => x.name === volume) ??
          null;
      if (v?.state === "evacuating") sentFinal = true;
      const wait = describeWait(v, sentFinal);
      const now = performance.now();
      if (wait.unreachable) unreachableSince ??= now;
      else unreachableSince = null;
      if (wait.message !== said) {
        say(wait.message + (wait.unreachable ? ` (giving up after ${timeoutMs / 1000} s)` : ""));
        said = wait.message;
      }
      const sending = v?.state === "sending" || v?.state === "evacuating";
      if (board && v && sending && Number(v.generationBytes) > 0) {
        // The generation on its way: writes after its cut belong to the next one.
        const remaining = Number(v.generationPendingBytes ?? v.pendingBytes);
        board.show(volume, `${volume} ${v.state}`, remaining, Number(v.generationBytes));
      }
      if (unreachableSince !== null && now - unreachableSince >= timeoutMs) {
        throw new PresyncError(
          ErrorCode.TIMEOUT,
          `${v === null ? "the agent" : "the destination"} has been unreachable for ${
            Math.round((now - unreachableSince) / 1000)
          } s (--timeout ${timeoutMs / 1000}): ${wait.message}. The evacuation stays ` +
            `requested: the agent finishes it once the link is back (see presync status), or ` +
            `run presync evacuate ${volume} again to follow it`,
          { retryable: true },
        );
      }
    }
  } finally {
    abort.abort();
    await request;
  }
  const done = outcome as { report: EvacuateReport } | { error: unknown };
  if ("error" in done) throw done.error;
  return done.report;
}

/** Where the evacuation's time went, for people: "pause 0.20 s, scan 0.41 s, …". */
export function describeBreakdown(b: EvacuationBreakdown): string {
  const parts = [
    ["pause (hook)", b.pauseSeconds],
    ["scan", b.scanSeconds],
    ["send", b.sendSeconds],
    ["commit", b.commitSeconds],
    ["verify", b.verifySeconds],
  ] as const;
  const w = b.sendWaits;
  return `  ${
    parts.map(([name, s]) => `${name} ${s.toFixed(2)} s`).join(", ")
  }; ${b.generations} generation${b.generations === 1 ? "" : "s"}, ${b.blocks} blocks, ${
    formatBytes(b.wireBytes)
  }\n  the send waited for the source ${w.sourceSeconds.toFixed(2)} s, the link ${
    w.linkSeconds.toFixed(2)
  } s, page digests ${w.digestsSeconds.toFixed(2)} s, acknowledgements ${
    w.flushSeconds.toFixed(2)
  } s`;
}

/** Resolves when `promise` settles or after `ms`, whichever is first; leaves no timer. */
async function waitFor(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
  } finally {
    clearTimeout(timer);
  }
}
