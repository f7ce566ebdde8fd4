// A full disk: persist rejects with an ENOSPC-based StorageFailedError, later persists fail too
// (nothing half-written is ever acknowledged), and every acknowledged entry is there on reopen.
// The real-disk case mounts a 2 MiB tmpfs (needs root); where mounting is impossible it runs on
// the MemoryFileSystem with a capacity limit instead, and says so.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { StorageFailedError } from "../../src/storage/errors.js";
import type { FileSystem } from "../../src/storage/fs.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { CONF, entries } from "./helpers.js";

const ENTRY_SIZE_BYTES = 4096;

async function fillUntilFull(dir: string, fs: FileSystem | undefined, preallocate: boolean): Promise<void> {
  const options = { fs, initialConf: CONF, segmentSizeBytes: 256 * 1024, preallocate };
  const storage = await DiskRaftStorage.open(dir, options);
  let acked = 0;
  let failure: unknown;
  for (let batch = 0; batch < 10_000 && failure === undefined; batch++) {
    try {
      await storage.persist({ hardState: { term: 1, vote: 1, commit: acked }, entries: entries(acked + 1, acked + 8, 1, ENTRY_SIZE_BYTES) });
      acked += 8;
    } catch (error) {
      failure = error;
    }
  }
  assert.ok(failure instanceof StorageFailedError, `expected StorageFailedError, got ${String(failure)}`);
  assert.equal(failure.errno, "ENOSPC");
  assert.match(failure.message, /ENOSPC: disk full/);
  assert.equal(failure.code, "UNHEALTHY");
  assert.ok(acked > 0);
  // The log stays refused: after a failed write nothing else is acknowledged.
  await assert.rejects(storage.persist({ entries: entries(acked + 1, acked + 1, 1) }), StorageFailedError);
  assert.equal(storage.lastIndex(), acked);
  await storage.close();

  const reopened = await DiskRaftStorage.open(dir, options);
  assert.ok(reopened.lastIndex() >= acked, `lastIndex ${reopened.lastIndex()} lost acknowledged ${acked}`);
  for (const e of reopened.entries(1, acked + 1, Number.POSITIVE_INFINITY)) assert.deepEqual(e.data, new Uint8Array(ENTRY_SIZE_BYTES).fill(e.index & 0xff));
  // The failed batch may have partly landed (its hard state, a prefix of its entries): allowed, as
  // it was never acknowledged; what was acknowledged must all be there.
  assert.ok(reopened.initialState().hardState.commit >= acked - 8);
  await reopened.close();
}

test("full disk (MemoryFileSystem with a capacity): ENOSPC rejects persist, nothing acknowledged is lost", async () => {
  for (const preallocate of [true, false]) {
    await fillUntilFull("/data", new MemoryFileSystem({ capacityBytes: 1024 * 1024 }), preallocate);
  }
});

function tryMountTmpfs(path: string): boolean {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", path], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test("full disk (a real 2 MiB tmpfs): ENOSPC rejects persist, nothing acknowledged is lost", async (t) => {
  const mountPoint = mkdtempSync(join(tmpdir(), "ferry-full-"));
  const mounted = tryMountTmpfs(mountPoint);
  try {
    if (!mounted) t.diagnostic("cannot mount tmpfs here (not root?): running on the MemoryFileSystem with a capacity instead");
    for (const preallocate of [true, false]) {
      const dir = join(mountPoint, `data-${preallocate}`);
      mkdirSync(dir);
      await fillUntilFull(dir, mounted ? undefined : new MemoryFileSystem({ capacityBytes: 2 * 1024 * 1024 }), preallocate);
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    // Lazy: a failed assertion above must not be hidden by a busy mount point.
    if (mounted) execFileSync("umount", ["-l", mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  }
});
