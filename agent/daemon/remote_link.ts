import type { Codec } from "../codec/mod.ts";
import { toHex } from "../hex.ts";
import { RemoteDestination } from "../net/remote_destination.ts";
import type { SourceInstance } from "../net/sync_messages.ts";
import { Priority } from "../wire/frame.ts";
import type { Session } from "../wire/session.ts";
import { PacedDestination } from "./paced_destination.ts";
import type { VolumeLink, VolumePipeline } from "./volume_pipeline.ts";

/**
 * A fresh identity for this agent process: 16 random bytes (never stored, so two agents
 * started from one copied state directory differ), with the host name and pid for messages.
 */
export function newSourceInstance(): SourceInstance {
  let host = "unknown";
  try {
    host = Deno.hostname();
  } catch {
    // Without --allow-sys the host stays unnamed; the id is what counts.
  }
  return { instance: toHex(crypto.getRandomValues(new Uint8Array(16))), host, pid: Deno.pid };
}

/** Options of {@linkcode openRemoteLink}. */
export interface RemoteLinkOptions {
  codec: Codec;
  /** This agent, as `open` names it. */
  source: SourceInstance;
  /** Settles when the session ends (a paused sender stops waiting then). */
  ended: Promise<unknown>;
}

/**
 * Opens `pipeline`'s volume on a new bulk stream of `session`: the plain protocol adapter
 * with the volume's sending policy (codec, pause gate, rate limit, counters) around it.
 *
 * @throws {PresyncError} what the destination refused the volume with, or a link error
 */
export async function openRemoteLink(
  session: Session,
  pipeline: VolumePipeline,
  options: RemoteLinkOptions,
): Promise<VolumeLink> {
  const stream = session.openStream(Priority.BULK);
  const { remote, resume } = await RemoteDestination.open(
    stream,
    pipeline.identity,
    options.source,
  );
  resume.staged?.received.free();
  return {
    destination: new PacedDestination(remote, {
      codec: options.codec,
      counters: pipeline.counters,
      pace: (wireBytes) => pipeline.pace(wireBytes, options.ended),
    }),
    resume: {
      committedGeneration: resume.committedGeneration,
      merkleRoot: resume.merkleRoot,
      cutTimeMs: resume.cutTimeMs,
    },
    verify: (merkleRoot, rootOnly) => remote.verify(merkleRoot, rootOnly),
    close: () => remote.close(),
  };
}
