import { validateVolumeName } from "../../agent/volume/volume_identity.ts";

/**
 * The names presync gives what it creates in QEMU for one volume, all starting with
 * `presync-<volume>-` so that presync recognises its own leftovers after a crash and never
 * touches anything else. Pure.
 */
export class TrackerNames {
  /** Common prefix of every name. */
  readonly prefix: string;
  readonly #bitmap: RegExp;
  readonly #overlay: RegExp;

  constructor(volume: string) {
    this.prefix = `presync-${validateVolumeName(volume)}-`;
    const escaped = this.prefix.replace(/[.\\-]/g, "\\$&");
    this.#bitmap = new RegExp(`^${escaped}(\\d{1,15})$`);
    this.#overlay = new RegExp(`^${escaped}fleece-(\\d{1,15})\\.qcow2$`);
  }

  /** The dirty bitmap recording the writes of generation `g`. */
  bitmap(g: number): string {
    return `${this.prefix}${g}`;
  }

  /** The generation a bitmap named `name` records, or null when it is not one of ours. */
  generationOf(name: string | undefined): number | null {
    const match = name === undefined ? null : this.#bitmap.exec(name);
    return match ? Number(match[1]) : null;
  }

  /** The fleecing overlay's format node for the cut of generation `g`. */
  fleeceNode(g: number): string {
    return `${this.prefix}fleece-${g}`;
  }

  /** The fleecing overlay's protocol (file) node. */
  fleeceFileNode(g: number): string {
    return `${this.prefix}fleece-${g}-file`;
  }

  /** The fleecing overlay's file, inside `dir`. */
  fleeceFile(dir: string, g: number): string {
    return `${dir}/${this.prefix}fleece-${g}.qcow2`;
  }

  /** The generation of an overlay file named `basename` (no directory), or null if not ours. */
  fleeceFileGeneration(basename: string): number | null {
    const match = this.#overlay.exec(basename);
    return match ? Number(match[1]) : null;
  }

  /** The copy-before-write backup job that fills the overlay. */
  backupJob(g: number): string {
    return `${this.prefix}backup-${g}`;
  }

  /** The id and NBD name of an export: a cut's (`g`), or the live disk's (`"live"`). */
  export(what: number | "live"): string {
    return `${this.prefix}export-${what}`;
  }

  /** A QEMU job creating a file for generation `g` (`step` 1: the file, 2: the qcow2). */
  createJob(g: number, step: 1 | 2): string {
    return `${this.prefix}create-${g}-${step}`;
  }

  /** Whether an id or node name is one presync made for this volume. */
  isOurs(id: string | undefined): boolean {
    return id !== undefined && id.startsWith(this.prefix);
  }
}
