import assert from "node:assert/strict";
import { Bitmap } from "../../agent/core/mod.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { loadScanState, removeScanState, saveScanState } from "./_scan_state.ts";

Deno.test("a scan state survives a save and load; a damaged one reads as an interrupted scan", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-scan-state-" });
  const fs = new DenoFileSystem();
  const path = `${dir}/qemu-scan.state`;
  try {
    assert.equal(await loadScanState(fs, path, 100, 7), null);
    using dirty = new Bitmap(100).setRange(3, 4).set(99);
    await saveScanState(fs, path, { generation: 5, complete: true, dirty });
    const loaded = await loadScanState(fs, path, 100, 7);
    assert.equal(loaded?.generation, 5);
    assert.equal(loaded?.complete, true);
    assert.deepEqual([...loaded!.dirty!.extents()], [[3, 4], [99, 1]]);
    loaded!.dirty!.free();
    await saveScanState(fs, path, { generation: 6, complete: false, dirty: null });
    assert.deepEqual(await loadScanState(fs, path, 100, 7), {
      generation: 6,
      complete: false,
      dirty: null,
    });
    await Deno.writeFile(path, new Uint8Array([9, 0, 0, 0, 1, 2]));
    assert.deepEqual(await loadScanState(fs, path, 100, 7), {
      generation: 7,
      complete: false,
      dirty: null,
    });
    await removeScanState(fs, path);
    await removeScanState(fs, path);
    assert.equal(await loadScanState(fs, path, 100, 7), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
