import { CODECS } from "../registry/mod.ts";
import { DEFAULT_CODEC_NAME } from "../codec/mod.ts";
import { Backoff } from "../daemon/backoff.ts";
import { PacedDestination } from "../daemon/paced_destination.ts";
import { newSourceInstance } from "../daemon/remote_link.ts";
import { adoptOriginalImage, failBack } from "../failback/failback.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { createLogger, sessionLoggerOf } from "../log.ts";
import { RemoteDestination } from "../net/remote_destination.ts";
import { Priority } from "../wire/frame.ts";
import { Session } from "../wire/session.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { parseCommand, required } from "./_args.ts";
import { storeFromFlag } from "./_store.ts";
import { DAEMON_FLAGS, sessionOptionsFromFlags, transportFromFlags } from "./_transport.ts";
import { ExitCode } from "./exit_codes.ts";

export const FAILBACK_USAGE =
  `presync failback VOLUME --adopt IMAGE --agent-state DIR --store DIR [--full]
presync failback VOLUME --to HOST:PORT --key-file FILE --store DIR --state DIR [options]

Fails a relocated VM's disk back to its original site, sending only what the VM wrote since
the relocation. At the original site, --adopt proves that IMAGE is the generation the other
site holds (every block hashed against the source agent's manifest; refused with
FAILBACK_DIVERGED otherwise) and makes it, hard-linked, the replica of the directory store
DIR: then run presync serve --store DIR there. At the site where the VM ran (its export
ended, the VM stopped), the second form sends the overlay's blocks to that serve as the
next generation, retrying after link failures; run again after a kill, it resumes.

  --adopt IMAGE        original site: the VM's original raw image (same file system as DIR)
  --agent-state DIR    original site: the source agent's state of VOLUME (its --state/VOLUME)
  --store DIR          the store: original site, the one to create; else the replica's store
  --state DIR          where the VM ran: this fail-back's own state (created on first run)
  --overlay FILE       the writable export's overlay (default: the store's VOLUME.overlay)
  --to HOST:PORT       the original site's presync serve
  --full               the original image diverged: adopt it anyway, send every block
  --codec NAME         ${CODECS.names.join(", ")} (default ${DEFAULT_CODEC_NAME})
  --json               print the report as JSON`;

/** `presync failback …`. */
export async function cmdFailback(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("failback", args, {
    adopt: { type: "string" },
    "agent-state": { type: "string" },
    store: { type: "string" },
    state: { type: "string" },
    overlay: { type: "string" },
    to: { type: "string" },
    full: { type: "boolean" },
    codec: { type: "string" },
    json: { type: "boolean" },
    ...DAEMON_FLAGS,
  });
  const volume = required("failback", "VOLUME", positionals[0]);
  const fs = new DenoFileSystem();
  const print = (report: Record<string, unknown>, text: string) =>
    console.log(values.json ? JSON.stringify(report) : text);
  if (values.adopt !== undefined) {
    const report = await adoptOriginalImage({
      fs,
      volume,
      imagePath: values.adopt,
      agentStateDir: required("failback", "--agent-state DIR", values["agent-state"]),
      backend: new DirectoryBackend(fs, required("failback", "--store DIR", values.store)),
      full: values.full === true,
    });
    print(
      { ...report },
      `${volume}: ${values.adopt} ${report.already ? "was already" : "is now"} generation ` +
        `${report.generation} of the store; run presync serve --store ${values.store}`,
    );
    return ExitCode.OK;
  }
  const log = createLogger(values["log-format"] === "json" ? "json" : "text");
  const to = parseHostPort("to", required("failback", "--to HOST:PORT", values.to));
  const psk = await readKey(required("failback", "--key-file FILE", values["key-file"]));
  const stateDir = required("failback", "--state DIR", values.state);
  const transport = await transportFromFlags(values, "client", { stateDir, log, psk });
  const codec = await CODECS.get(values.codec ?? DEFAULT_CODEC_NAME).open();
  const source = newSourceInstance();
  const counters = { rawBytes: 0, wireBytes: 0 };
  const backoff = new Backoff();
  const started = performance.now();
  const report = await failBack({
    fs,
    store: storeFromFlag({ store: required("failback", "--store DIR", values.store) }),
    volume,
    overlayPath: values.overlay,
    stateDir,
    full: values.full === true,
    connect: async (identity) => {
      const channel = await transport.connect(to, AbortSignal.timeout(30_000));
      const session = await Session.connect(channel, {
        ...sessionOptionsFromFlags(values),
        psk,
        logger: sessionLoggerOf(log),
      });
      try {
        const { remote, resume } = await RemoteDestination.open(
          session.openStream(Priority.BULK),
          identity,
          source,
        );
        resume.staged?.received.free();
        return {
          destination: new PacedDestination(remote, {
            codec,
            counters,
            pace: () => Promise.resolve(),
          }),
          close: async () => {
            await remote.close();
            session.abort();
          },
        };
      } catch (err) {
        session.abort();
        throw err;
      }
    },
    retry: async (error) => {
      const retryInMs = Math.round(backoff.next(Math.random()));
      log("warn", "link_down", { code: error.code, error: error.message, retryInMs });
      await new Promise((resolve) => setTimeout(resolve, retryInMs));
    },
  });
  const seconds = (performance.now() - started) / 1000;
  print(
    { ...report, wireBytes: counters.wireBytes, seconds },
    `${volume}: generation ${report.generation} committed at ${values.to}: ${report.blocks} ` +
      `blocks, ${report.bytesSent} data bytes (${counters.wireBytes} on the wire) in ` +
      `${seconds.toFixed(1)} s, root ${report.merkleRoot}`,
  );
  return ExitCode.OK;
}
