import assert from "node:assert/strict";
import { test } from "node:test";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { CONF, entries, text } from "./helpers.js";

test("smoke: persist, read, reopen", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open("/data", { fs, initialConf: CONF, segmentSizeBytes: 4096, preallocate: true });
  assert.deepEqual(storage.initialState().conf, CONF);
  await storage.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: entries(1, 100, 1) });
  assert.equal(storage.lastIndex(), 100);
  assert.equal(text(storage.entries(5, 6, 1000)[0]!.data), "entry 5 term 1");
  await storage.persist({ entries: entries(90, 95, 2) });
  assert.equal(storage.lastIndex(), 95);
  assert.equal(storage.term(90), 2);
  await storage.close();
  const again = await DiskRaftStorage.open("/data", { fs, segmentSizeBytes: 4096 });
  assert.equal(again.lastIndex(), 95);
  assert.equal(again.term(89), 1);
  assert.equal(again.term(95), 2);
  assert.deepEqual(again.initialState(), { hardState: { term: 1, vote: 1, commit: 0 }, conf: CONF });
  const all = again.entries(1, 96, 1e9);
  assert.equal(all.length, 95);
  assert.equal(text(all[94]!.data), "entry 95 term 2");
  console.log(await fs.readdir("/data"));
  await again.close();
});
