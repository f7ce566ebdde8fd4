// The real-disk FileSystem: writeDurable goes through a second descriptor opened with O_DSYNC at
// open time, so it keeps writing the same file after a rename (WAL segments are prepared as
// next-segment.tmp and renamed into place) and never touches the file now at the old path.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { NodeFileSystem } from "../../src/storage/node-fs.js";

test("writeDurable writes the opened file, also after it was renamed and its old name reused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-node-fs-"));
  try {
    const fs = new NodeFileSystem();
    const prepared = await fs.open(join(dir, "next.tmp"), "create-truncate");
    await prepared.write(new TextEncoder().encode("head|"), 0);
    await prepared.datasync();
    await fs.rename(join(dir, "next.tmp"), join(dir, "segment-1"));
    const next = await fs.open(join(dir, "next.tmp"), "create-truncate"); // the next prepared file
    await prepared.writeDurable(new TextEncoder().encode("durable"), 5);
    assert.equal(readFileSync(join(dir, "segment-1"), "utf8"), "head|durable");
    assert.equal(readFileSync(join(dir, "next.tmp"), "utf8"), "");
    await prepared.close();
    await next.close();
    const readOnly = await fs.open(join(dir, "segment-1"), "read");
    await assert.rejects(readOnly.writeDurable(new Uint8Array(1), 0)); // no write access at all
    await readOnly.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
