import type { Extent } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";

const HEX_ROOT = /^[0-9a-f]{64}$/;

/** A field check failed: what was expected where, and what came. */
export function malformed(
  what: string,
  field: string,
  expected: string,
  value: unknown,
): PresyncError {
  const shown = JSON.stringify(value) ?? String(value);
  return new PresyncError(
    ErrorCode.PROTOCOL_VIOLATION,
    `${what}: ${field} must be ${expected}: received ${
      shown.length > 80 ? `${shown.slice(0, 80)}…` : shown
    }`,
  );
}

/** Typed field readers over one JSON object, for the message named `what`. */
export class Fields {
  readonly #what: string;
  readonly #value: Record<string, unknown>;

  constructor(what: string, value: unknown) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw malformed(what, "the message", "a JSON object", value);
    }
    this.#what = what;
    this.#value = value as Record<string, unknown>;
  }

  has(name: string): boolean {
    return this.#value[name] !== undefined;
  }

  raw(name: string): unknown {
    return this.#value[name];
  }

  int(name: string, min = 0): number {
    const v = this.#value[name];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      throw malformed(this.#what, name, `an integer ≥ ${min}`, v);
    }
    return v;
  }

  time(name: string): number {
    const v = this.#value[name];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw malformed(this.#what, name, "a time in ms since the epoch", v);
    }
    return v;
  }

  string(name: string, maxLength = Infinity): string {
    const v = this.#value[name];
    if (typeof v !== "string" || v.length > maxLength) {
      throw malformed(this.#what, name, `a string of at most ${maxLength} characters`, v);
    }
    return v;
  }

  root(name: string): string {
    const v = this.#value[name];
    if (typeof v !== "string" || !HEX_ROOT.test(v)) {
      throw malformed(this.#what, name, "a Merkle root of 64 lowercase hex digits", v);
    }
    return v;
  }

  bool(name: string): boolean {
    const v = this.#value[name];
    if (typeof v !== "boolean") throw malformed(this.#what, name, "true or false", v);
    return v;
  }

  object(name: string): Fields {
    return new Fields(`${this.#what}: ${name}`, this.#value[name]);
  }

  ints(name: string): number[] {
    const v = this.#value[name];
    if (!Array.isArray(v) || !v.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw malformed(this.#what, name, "a list of integers ≥ 0", v);
    }
    return v;
  }

  extents(name: string): Extent[] {
    const v = this.#value[name];
    const isExtent = (e: unknown) =>
      Array.isArray(e) && e.length === 2 &&
      e.every((n) => Number.isSafeInteger(n) && n >= 0);
    if (!Array.isArray(v) || !v.every(isExtent)) {
      throw malformed(this.#what, name, "a list of [first, count] block runs", v);
    }
    return v as Extent[];
  }

  /** Runs `parse` on the field, turning its refusal into a protocol violation naming it. */
  parsed<T>(name: string, parse: (value: unknown) => T): T {
    try {
      return parse(this.#value[name]);
    } catch (err) {
      if (err instanceof PresyncError && err.code === ErrorCode.INVALID_VOLUME_NAME) throw err;
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `${this.#what}: ${name} is not valid: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
  }
}
