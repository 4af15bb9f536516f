/**
 * Every JSON message of the sync protocol (docs/PROTOCOL.md, "Sync protocol"): the ops a
 * source sends, the replies a destination answers with, and the error reply, as types, with
 * one validating parser per direction. Everything read from a peer goes through
 * {@linkcode parseSyncRequest}, {@linkcode parseFetchRequest} or {@linkcode parseReply}
 * before it is used: a message that does not have the documented shape is a
 * `PROTOCOL_VIOLATION`, never a crash or a wrong value. Fields a peer does not know are
 * ignored, so a newer peer may add some.
 *
 * @module
 */

import type { Extent } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { Fields, malformed } from "./_json_fields.ts";
import { type CommittedState, MAX_DIGEST_BLOCKS } from "../sync/destination.ts";
import {
  parseVolumeIdentity,
  validateVolumeName,
  type VolumeIdentity,
} from "../volume/volume_identity.ts";

/** The ops of the sync protocol: the only place their names are spelled. */
export const SyncOp = {
  /** First message of a sync stream: names the volume (and the source agent). */
  OPEN: "open",
  /** Asks for the resume state now. */
  RESUME: "resume",
  /** Starts (or resumes) staging a generation. */
  BEGIN: "begin",
  /** Asks the destination to make everything before it durable. */
  FLUSH: "flush",
  /** Commits the staged generation. */
  COMMIT: "commit",
  /** Asks the destination to check its replica. */
  VERIFY: "verify",
  /** Postcopy: the destination asks the source for blocks (on a stream of its own). */
  FETCH: "fetch",
  /** Asks for the page digests of the committed copies of some blocks (sync protocol 3). */
  PAGES: "pages",
} as const;

/** One of the {@linkcode SyncOp} values. */
export type SyncOp = typeof SyncOp[keyof typeof SyncOp];

/** Most consecutive blocks one fetch may ask for. */
export const MAX_FETCH_BLOCKS = 64;
/** Most blocks one `pages` request may name. */
export const MAX_PAGES_BLOCKS = MAX_DIGEST_BLOCKS;
/** Longest host name a source may give in `open`. */
const MAX_HOST_LENGTH = 253;
const INSTANCE_ID = /^[0-9a-f]{16,64}$/;

/**
 * Which running source agent sends a stream: a random id chosen when the agent process
 * starts (never stored, so a copied state directory does not copy it), with its host and
 * pid for messages.
 */
export interface SourceInstance {
  /** 16 to 64 lowercase hex digits, fresh per agent process. */
  instance: string;
  host: string;
  pid: number;
}

/** `open`: the first message of a sync stream. */
export interface OpenRequest {
  op: typeof SyncOp.OPEN;
  volume: string;
  identity: VolumeIdentity;
  /** Absent from agents that predate split-brain protection. */
  source?: SourceInstance;
  /** The source can send PATCH messages (sync protocol 3); absent from older sources. */
  patches?: boolean;
  /** The source may fold a generation in `begin` (sync protocol 4); absent from older sources. */
  folds?: boolean;
}

/** `resume`. */
export interface ResumeRequest {
  op: typeof SyncOp.RESUME;
}

/** `begin`: generation `generation` with block set `dirty` (a serialized bitmap, base64). */
export interface BeginRequest {
  op: typeof SyncOp.BEGIN;
  generation: number;
  cutTimeMs: number;
  dirty: string;
  final: boolean;
  /**
   * Blocks folded into the staged generation (a serialized bitmap, base64; sync protocol 4,
   * only once `open` agreed on folds): see `BeginOptions.fold`.
   */
  fold?: string;
}

/** `flush`, numbered so its reply can be matched. */
export interface FlushRequest {
  op: typeof SyncOp.FLUSH;
  seq: number;
}

/** `commit` of `generation` if the replica's Merkle root becomes `merkleRoot`. */
export interface CommitRequest {
  op: typeof SyncOp.COMMIT;
  generation: number;
  merkleRoot: string;
}

/** `verify`: against `merkleRoot` when given; `rootOnly` skips re-reading the image. */
export interface VerifyRequest {
  op: typeof SyncOp.VERIFY;
  merkleRoot?: string;
  rootOnly?: boolean;
}

/** `pages`: the page digests of the committed copies of `blocks`. */
export interface PagesRequest {
  op: typeof SyncOp.PAGES;
  blocks: number[];
}

/** `fetch` (postcopy): `count` blocks from `first` of `generation` of `volume`. */
export interface FetchRequest {
  op: typeof SyncOp.FETCH;
  volume: string;
  generation: number;
  first: number;
  count: number;
}

/** A request after `open` on a sync stream. */
export type SyncRequest =
  | ResumeRequest
  | BeginRequest
  | FlushRequest
  | CommitRequest
  | VerifyRequest
  | PagesRequest;

/** The resume state as it crosses the wire (`received`: a serialized bitmap, base64). */
export interface WireResume {
  committedGeneration: number;
  merkleRoot: string;
  cutTimeMs: number;
  staged: { generation: number; received: string } | null;
}

/** What a destination's check of its replica found (the `verify` reply's report). */
export interface ReplicaCheck {
  /** True when every check asked for passed. */
  ok: boolean;
  /** The replica's Merkle root (hex). */
  merkleRoot: string;
  /** Whether it equals the root asked for (absent when none was given). */
  rootMatches?: boolean;
  /** Blocks whose bytes do not match the replica's own manifest. */
  damaged: Extent[];
}

/** Reply to `open` and `resume`. */
export interface ResumeReply {
  ok: true;
  resume: WireResume;
  /**
   * Reply to an `open` offering patches: the destination takes PATCH messages on this stream.
   * Absent (false) from older destinations and in `resume` replies.
   */
  patches?: boolean;
  /** Reply to an `open` offering folds: `begin.fold` is taken. Absent from older destinations. */
  folds?: boolean;
}

/** Reply to `begin`. */
export interface BeginReply {
  ok: true;
}

/**
 * Reply to `flush`: blocks in `rejected` were not staged and must be sent again; blocks in
 * `resend` came as patches that did not rebuild the source's block over the destination's
 * copy: not staged, to be sent whole (absent from older destinations: none).
 */
export interface FlushReply {
  ok: true;
  seq: number;
  rejected: number[];
  resend: number[];
}

/** Reply to `commit`: the replica's committed state now. */
export interface CommitReply {
  ok: true;
  meta: CommittedState;
}

/** Reply to `verify`. */
export interface VerifyReply {
  ok: true;
  generation: number;
  report: ReplicaCheck;
}

/** Reply to `pages`: the digests of each block's pages, in request order (base64). */
export interface PagesReply {
  ok: true;
  digests: string;
}

/** The reply to any request that failed; also the destination's last word on a stream. */
export type ErrorReply = {
  ok: false;
  code: string;
  message: string;
  retryable: boolean;
};

/** The successful reply to each op. */
export interface SyncReplies {
  open: ResumeReply;
  resume: ResumeReply;
  begin: BeginReply;
  flush: FlushReply;
  commit: CommitReply;
  verify: VerifyReply;
  pages: PagesReply;
}

/** Any message a destination may send on a sync stream. */
export type SyncReply = SyncReplies[keyof SyncReplies] | ErrorReply;

/** The error reply reporting `err`. */
export function errorReply(err: unknown): ErrorReply {
  if (err instanceof PresyncError) {
    return { ok: false, code: err.code, message: err.message, retryable: err.retryable };
  }
  return {
    ok: false,
    code: ErrorCode.IO,
    message: err instanceof Error ? err.message : String(err),
    retryable: false,
  };
}

/**
 * The error a peer reported, with its code and retryability (a code this build does not
 * know becomes `IO`), its message prefixed with who said it.
 */
export function errorFromReply(
  reply: { code?: unknown; message?: unknown; retryable?: unknown },
  who = "destination",
): PresyncError {
  const known = Object.values(ErrorCode) as string[];
  const code = known.includes(String(reply.code)) ? reply.code as ErrorCode : ErrorCode.IO;
  return new PresyncError(code, `${who}: ${reply.message}`, {
    retryable: reply.retryable === true,
  });
}

function parseSource(f: Fields): SourceInstance {
  const instance = f.string("instance", 64);
  if (!INSTANCE_ID.test(instance)) {
    throw malformed("open: source", "instance", "16 to 64 lowercase hex digits", instance);
  }
  return { instance, host: f.string("host", MAX_HOST_LENGTH), pid: f.int("pid") };
}

/**
 * Parses the first message of a sync stream.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` when it is not a well-formed `open`;
 *   `INVALID_VOLUME_NAME` for a name that could reach outside the store
 */
export function parseOpenRequest(value: unknown): OpenRequest {
  const f = new Fields("open", value);
  if (f.raw("op") !== SyncOp.OPEN) {
    throw malformed("the first message of a sync stream", "op", `"${SyncOp.OPEN}"`, f.raw("op"));
  }
  const volume = validateVolumeName(f.raw("volume"));
  const identity = f.parsed("identity", parseVolumeIdentity);
  if (identity.name !== volume) {
    throw malformed("open", "identity.name", `the volume's name ${volume}`, identity.name);
  }
  const request: OpenRequest = { op: SyncOp.OPEN, volume, identity };
  if (f.has("source")) request.source = parseSource(f.object("source"));
  if (f.has("patches")) request.patches = f.bool("patches");
  if (f.has("folds")) request.folds = f.bool("folds");
  return request;
}

/**
 * Parses a request that follows `open` on a sync stream.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` for an unknown op or a malformed field
 */
export function parseSyncRequest(value: unknown): SyncRequest {
  const f = new Fields("sync request", value);
  const op = f.raw("op");
  switch (op) {
    case SyncOp.RESUME:
      return { op };
    case SyncOp.BEGIN: {
      const b = new Fields("begin", value);
      return {
        op,
        generation: b.int("generation", 1),
        cutTimeMs: b.time("cutTimeMs"),
        dirty: b.string("dirty"),
        final: b.has("final") ? b.bool("final") : false,
        ...(b.has("fold") ? { fold: b.string("fold") } : {}),
      };
    }
    case SyncOp.FLUSH:
      return { op, seq: new Fields("flush", value).int("seq") };
    case SyncOp.COMMIT: {
      const c = new Fields("commit", value);
      return { op, generation: c.int("generation", 1), merkleRoot: c.root("merkleRoot") };
    }
    case SyncOp.VERIFY: {
      const v = new Fields("verify", value);
      const request: VerifyRequest = { op };
      if (v.has("merkleRoot")) request.merkleRoot = v.root("merkleRoot");
      if (v.has("rootOnly")) request.rootOnly = v.bool("rootOnly");
      return request;
    }
    case SyncOp.PAGES: {
      const blocks = new Fields("pages", value).ints("blocks");
      if (blocks.length < 1 || blocks.length > MAX_PAGES_BLOCKS) {
        throw malformed("pages", "blocks", `1 to ${MAX_PAGES_BLOCKS} blocks`, blocks.length);
      }
      return { op, blocks };
    }
    default:
      throw malformed("sync request", "op", "resume, begin, flush, commit, verify or pages", op);
  }
}

/**
 * Parses the request of a fetch stream.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` when it is not a well-formed `fetch` with
 *   1 to {@linkcode MAX_FETCH_BLOCKS} blocks; `INVALID_VOLUME_NAME` for a bad name
 */
export function parseFetchRequest(value: unknown): FetchRequest {
  const f = new Fields("fetch", value);
  if (f.raw("op") !== SyncOp.FETCH) {
    throw malformed("the first message of a fetch stream", "op", `"${SyncOp.FETCH}"`, f.raw("op"));
  }
  const count = f.int("count", 1);
  if (count > MAX_FETCH_BLOCKS) {
    throw malformed("fetch", "count", `at most ${MAX_FETCH_BLOCKS}`, count);
  }
  return {
    op: SyncOp.FETCH,
    volume: validateVolumeName(f.raw("volume")),
    generation: f.int("generation"),
    first: f.int("first"),
    count,
  };
}

function parseResume(f: Fields): WireResume {
  const r = f.object("resume");
  const staged = r.raw("staged") === null ? null : r.object("staged");
  return {
    committedGeneration: r.int("committedGeneration"),
    merkleRoot: r.root("merkleRoot"),
    cutTimeMs: r.time("cutTimeMs"),
    staged: staged &&
      { generation: staged.int("generation", 1), received: staged.string("received") },
  };
}

type ReplyParsers = { [O in keyof SyncReplies]: (f: Fields) => SyncReplies[O] };

const REPLY_PARSERS: ReplyParsers = {
  open: (f) => ({
    ok: true,
    resume: parseResume(f),
    ...(f.has("patches") ? { patches: f.bool("patches") } : {}),
    ...(f.has("folds") ? { folds: f.bool("folds") } : {}),
  }),
  resume: (f) => ({ ok: true, resume: parseResume(f) }),
  begin: () => ({ ok: true }),
  flush: (f) => ({
    ok: true,
    seq: f.int("seq"),
    rejected: f.ints("rejected"),
    resend: f.has("resend") ? f.ints("resend") : [],
  }),
  commit: (f) => {
    const m = f.object("meta");
    return {
      ok: true,
      meta: {
        committedGeneration: m.int("committedGeneration"),
        merkleRoot: m.root("merkleRoot"),
        cutTimeMs: m.time("cutTimeMs"),
      },
    };
  },
  pages: (f) => ({ ok: true, digests: f.string("digests") }),
  verify: (f) => {
    const r = f.object("report");
    const report: ReplicaCheck = {
      ok: r.bool("ok"),
      merkleRoot: r.root("merkleRoot"),
      damaged: r.extents("damaged"),
    };
    if (r.has("rootMatches")) report.rootMatches = r.bool("rootMatches");
    return { ok: true, generation: f.int("generation"), report };
  },
};

/**
 * Parses the destination's reply to `op`; an error reply is thrown as the error it reports.
 *
 * @throws {PresyncError} the reported error (its code and retryability); `PROTOCOL_VIOLATION`
 *   for a reply without the documented shape
 */
export function parseReply<O extends keyof SyncReplies>(op: O, value: unknown): SyncReplies[O] {
  const f = new Fields(`reply to ${op}`, value);
  const ok = f.raw("ok");
  if (ok === false) throw errorFromReply(parseErrorReply(value));
  if (ok !== true) throw malformed(`reply to ${op}`, "ok", "true or false", ok);
  return REPLY_PARSERS[op](f);
}

/**
 * Parses an error reply (a reply with `ok: false`).
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` when it lacks its code or message
 */
export function parseErrorReply(value: unknown): ErrorReply {
  const f = new Fields("error reply", value);
  if (f.raw("ok") !== false) throw malformed("error reply", "ok", "false", f.raw("ok"));
  return {
    ok: false,
    code: f.string("code", 64),
    message: f.string("message", 64 * 1024),
    retryable: f.has("retryable") ? f.bool("retryable") : false,
  };
}
