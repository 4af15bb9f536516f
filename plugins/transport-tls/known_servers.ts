import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { normalizeFingerprint } from "./certificate_fingerprint.ts";

/**
 * Where a TLS client keeps the certificate fingerprints it trusted on first use, per server
 * (`host:port`), like SSH's `known_hosts`.
 */
export interface PinStore {
  /** Where the pins live, for messages (e.g. a file path). */
  readonly location: string;
  /** The pinned fingerprint of `server`, or undefined before first contact. */
  get(server: string): Promise<string | undefined>;
  /** Pins `fingerprint` for `server`. Idempotent for the same fingerprint. */
  pin(server: string, fingerprint: string): Promise<void>;
}

/**
 * A {@linkcode PinStore} in one JSON file, `{"host:port": "sha256 hex", …}`, mode 0600,
 * rewritten through a temporary file and a rename.
 *
 * @example
 * ```ts ignore
 * const known = new KnownServersFile("/var/lib/presync/agent/known_servers.json");
 * await known.pin("dr.example:7700", fingerprint);
 * ```
 */
export class KnownServersFile implements PinStore {
  readonly location: string;

  constructor(path: string) {
    this.location = path;
  }

  async #read(): Promise<Record<string, string>> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.location);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return {};
      throw new PresyncError(ErrorCode.IO, `cannot read ${this.location}: ${error}`, {
        cause: error,
      });
    }
    try {
      const pins = JSON.parse(text);
      if (pins && typeof pins === "object" && !Array.isArray(pins)) return pins;
    } catch { /* reported below */ }
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `${this.location} must hold a JSON object of "host:port": "fingerprint" pairs; fix or ` +
        `delete it (the next connection then pins the server's certificate again)`,
    );
  }

  async get(server: string): Promise<string | undefined> {
    const pin = (await this.#read())[server];
    return typeof pin === "string" ? normalizeFingerprint(pin) : undefined;
  }

  async pin(server: string, fingerprint: string): Promise<void> {
    const pins = await this.#read();
    pins[server] = normalizeFingerprint(fingerprint);
    const dir = this.location.slice(0, Math.max(0, this.location.lastIndexOf("/"))) || ".";
    const temporary = `${this.location}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(temporary, JSON.stringify(pins, null, 2) + "\n", {
        mode: 0o600,
        createNew: true,
      });
      await Deno.rename(temporary, this.location);
    } catch (error) {
      await Deno.remove(temporary).catch(() => {});
      throw new PresyncError(ErrorCode.IO, `cannot write ${this.location}: ${error}`, {
        cause: error,
      });
    }
  }
}
