// The data directory lock on the real file system: one process at a time, stale locks taken over.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { StorageLockedError } from "../../src/storage/errors.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { CONF, entries } from "./helpers.js";

const OPTIONS = { initialConf: CONF, segmentSizeBytes: 64 * 1024 };

test("a held lock refuses a second open; a lock of a dead process is taken over", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-lock-"));
  try {
    const storage = await DiskRaftStorage.open(dir, OPTIONS);
    assert.equal(readFileSync(join(dir, "LOCK"), "utf8").trim(), String(process.pid));
    await assert.rejects(DiskRaftStorage.open(dir, OPTIONS), (error: unknown) => {
      assert.ok(error instanceof StorageLockedError);
      assert.match(error.message, /already open in this process/);
      return true;
    });
    await storage.persist({ entries: entries(1, 3, 1) });
    await storage.close();

    // Another live process holds it (pid 1 always exists).
    writeFileSync(join(dir, "LOCK"), "1\n");
    await assert.rejects(DiskRaftStorage.open(dir, OPTIONS), (error: unknown) => {
      assert.ok(error instanceof StorageLockedError);
      assert.match(error.message, /locked by running process 1/);
      return true;
    });

    // A process that died (kill -9 leaves its LOCK behind): the lock is stale and taken over.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
    writeFileSync(join(dir, "LOCK"), `${dead}\n`);
    const reopened = await DiskRaftStorage.open(dir, OPTIONS);
    assert.equal(reopened.lastIndex(), 3);
    await reopened.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
