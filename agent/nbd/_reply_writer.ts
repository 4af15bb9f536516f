import type { ByteSink } from "./_socket_writer.ts";

/** Replies queued while a socket write is under way are joined into one write up to this. */
const JOIN_LIMIT_BYTES = 256 * 1024;

/**
 * Writes replies to a stream in the order they are sent, each reply's parts whole and
 * consecutive, joining replies into few socket writes (one syscall each): replies queue while
 * a write is under way or while the writer is *held* (the connection is still parsing
 * requests that arrived together), then go out together. Small parts are copied into one
 * buffer; large ones go as they are.
 */
export class ReplyWriter {
  readonly #writer: Pick<ByteSink, "write">;
  #queue: Uint8Array[] = [];
  #queued: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  #pumping = false;
  #held = false;
  #failure: { err: unknown } | null = null;

  constructor(writer: Pick<ByteSink, "write">) {
    this.#writer = writer;
  }

  /** Queues one reply; resolves once all of it is written, rejects if writing failed. */
  send(...parts: Uint8Array[]): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure.err);
    for (const part of parts) if (part.length > 0) this.#queue.push(part);
    const written = new Promise<void>((resolve, reject) => this.#queued.push({ resolve, reject }));
    if (!this.#pumping && !this.#held) this.#pump();
    return written;
  }

  /**
   * Holds replies back until {@linkcode release}. The holder must release before it waits
   * for anything a held reply could be holding up.
   */
  hold(): void {
    this.#held = true;
  }

  /** Ends a {@linkcode hold}: the queued replies go out (in one write when small). */
  release(): void {
    this.#held = false;
    if (!this.#pumping && this.#queued.length > 0) this.#pump();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    while (this.#queued.length > 0) {
      const parts = this.#queue;
      const waiting = this.#queued;
      this.#queue = [];
      this.#queued = [];
      try {
        for (const chunk of join(parts)) await this.#writer.write(chunk);
        for (const w of waiting) w.resolve();
      } catch (err) {
        this.#failure = { err };
        for (const w of [...waiting, ...this.#queued]) w.reject(err);
        this.#queue = [];
        this.#queued = [];
      }
    }
    this.#pumping = false;
  }
}

/** `parts` as few buffers as possible without copying any part over the join limit. */
function join(parts: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  let runBytes = 0;
  const flush = () => {
    if (run.length === 1) out.push(run[0]);
    else if (run.length > 1) {
      const joined = new Uint8Array(runBytes);
      let at = 0;
      for (const p of run) {
        joined.set(p, at);
        at += p.length;
      }
      out.push(joined);
    }
    run = [];
    runBytes = 0;
  };
  for (const part of parts) {
    if (runBytes + part.length > JOIN_LIMIT_BYTES) flush();
    if (part.length > JOIN_LIMIT_BYTES) out.push(part);
    else {
      run.push(part);
      runBytes += part.length;
    }
  }
  flush();
  return out;
}
