// The manifest walked in pieces through one reused buffer: reads into a caller's buffer, the
// Merkle root (with and without an overlay) and copyFrom must see exactly the file's entries,
// also across piece boundaries and a short last piece.

import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { ENTRY_BYTES } from "./block_hashes.ts";
import { MANIFEST_PIECE_ENTRIES, ManifestFile } from "./manifest_file.ts";

/** Two whole pieces and a short one. */
const BLOCKS = 2 * MANIFEST_PIECE_ENTRIES + 77;

seededTest(
  "manifest: root, overlay root and copyFrom over pieces read into one buffer",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-manifest-" });
    const fs = new DenoFileSystem();
    try {
      const a = prng.fill(new Uint8Array(BLOCKS * ENTRY_BYTES));
      const b = prng.fill(new Uint8Array(BLOCKS * ENTRY_BYTES));
      const ma = await ManifestFile.open(fs, `${dir}/a`, BLOCKS, { create: true });
      const mb = await ManifestFile.open(fs, `${dir}/b`, BLOCKS, { create: true });
      try {
        await ma.write(0, a);
        await mb.write(0, b);

        // A read into a larger buffer gives its first count entries, the same as a fresh read.
        const into = new Uint8Array(MANIFEST_PIECE_ENTRIES * ENTRY_BYTES).fill(0xee);
        const first = MANIFEST_PIECE_ENTRIES - 3;
        const got = await ma.read(first, 10, into);
        assert.equal(got.length, 10 * ENTRY_BYTES);
        assert.equal(got.buffer, into.buffer);
        assertBytesEqual(
          got,
          a.subarray(first * ENTRY_BYTES, (first + 10) * ENTRY_BYTES),
          "read into a buffer",
        );
        assertBytesEqual(await ma.read(first, 10), got, "a fresh read");
        await assert.rejects(
          ma.read(0, 10, new Uint8Array(9 * ENTRY_BYTES)),
          (err: PresyncError) => err.code === ErrorCode.INVALID_ARGUMENT,
        );

        assert.deepEqual(await ma.root(), blake3(a));

        // Entries taken from b over runs that cross piece boundaries and end the volume.
        using which = new Bitmap(BLOCKS);
        const runs: [number, number][] = [
          [5, 1],
          [MANIFEST_PIECE_ENTRIES - 2, 4],
          [MANIFEST_PIECE_ENTRIES + prng.int(1000), 1 + prng.int(3000)],
          [BLOCKS - 9, 9],
        ];
        const mixed = a.slice();
        for (const [start, length] of runs) {
          which.setRange(start, length);
          const span = [start * ENTRY_BYTES, (start + length) * ENTRY_BYTES] as const;
          mixed.set(b.subarray(...span), span[0]);
        }
        assert.deepEqual(await ma.root({ which, from: mb }), blake3(mixed));
        assertBytesEqual(await ma.read(0, BLOCKS), a, "an overlay root leaves the file as it was");

        await ma.copyFrom(mb, which);
        assertBytesEqual(await ma.read(0, BLOCKS), mixed, "after copyFrom");
        assert.deepEqual(await ma.root(), blake3(mixed));
      } finally {
        ma.close();
        mb.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
