// Recovery at open: every path the log can be found in after a stop or a crash.
import assert from "node:assert/strict";
import { test } from "node:test";
import { StorageCorruptError, StorageLockedError } from "../../src/storage/errors.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage, type StorageOptions } from "../../src/storage/raft-storage.js";
import { CONF, entries, text } from "./helpers.js";

const DIR = "/data";
const SEGMENT_1 = "/data/0000000000000001.wal";
const SEGMENT_2 = "/data/0000000000000002.wal";

function options(fs: MemoryFileSystem, extra: StorageOptions = {}): StorageOptions {
  return { fs, initialConf: CONF, segmentSizeBytes: 4096, ...extra };
}

async function tick(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise((resolve) => setImmediate(resolve));
}

test("a clean restart gives back hard state, entries, configuration and snapshot", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  await storage.persist({ hardState: { term: 2, vote: 3, commit: 40 }, entries: entries(1, 50, 2) });
  await storage.saveSnapshot({ index: 40, term: 2, conf: CONF }, new TextEncoder().encode("state at 40"));
  await storage.persist({ hardState: { term: 2, vote: 3, commit: 50 }, entries: entries(51, 60, 2) });
  await storage.close();

  const reopened = await DiskRaftStorage.open(DIR, options(fs));
  assert.deepEqual(reopened.initialState(), { hardState: { term: 2, vote: 3, commit: 50 }, conf: CONF });
  assert.equal(reopened.firstIndex(), 1);
  assert.equal(reopened.lastIndex(), 60);
  assert.deepEqual(
    reopened.entries(1, 61, Number.POSITIVE_INFINITY).map((e) => [e.index, e.term, text(e.data)]),
    entries(1, 60, 2).map((e) => [e.index, e.term, text(e.data)]),
  );
  assert.equal(reopened.snapshot().meta.index, 40);
  assert.equal(text(reopened.snapshot().data), "state at 40");
  await reopened.close();
});

test("every record type round-trips through a restart, across many segments", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  for (let batch = 0; batch < 20; batch++) {
    const first = batch * 10 + 1;
    await storage.persist({ hardState: { term: batch + 1, vote: 2, commit: first - 1 }, entries: entries(first, first + 9, batch + 1, 100) });
  }
  await storage.persist({ entries: [{ index: 201, term: 20, type: "conf-change", data: new Uint8Array([1, 2, 3]) }] });
  await storage.close();
  assert.ok((await fs.readdir(DIR)).filter((name) => name.endsWith(".wal")).length > 3, "the log should span several segments");
  const reopened = await DiskRaftStorage.open(DIR, options(fs));
  assert.equal(reopened.lastIndex(), 201);
  assert.deepEqual(reopened.initialState().hardState, { term: 20, vote: 2, commit: 190 });
  const last = reopened.entries(201, 202, 0)[0]!;
  assert.deepEqual({ ...last, data: [...last.data] }, { index: 201, term: 20, type: "conf-change", data: [1, 2, 3] });
  for (const e of reopened.entries(1, 201, Number.POSITIVE_INFINITY)) {
    assert.equal(e.term, Math.ceil(e.index / 10));
    assert.deepEqual(e.data, new Uint8Array(100).fill(e.index & 0xff));
  }
  await reopened.close();
});

test("a torn tail (a partial last record) is truncated, the synced log survives", async () => {
  let fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 20 }));
  await storage.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: entries(1, 10, 1) });
  fs.holdSyncs();
  void storage.persist({ entries: entries(11, 20, 1) }).catch(() => undefined);
  await tick();
  fs = fs.crash({ lastWrite: "tear", random: () => 0.55 }); // mid-record: half would end on a record boundary
  const reopened = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 20 }));
  assert.ok(reopened.lastIndex() >= 10 && reopened.lastIndex() < 20, `lastIndex ${reopened.lastIndex()}`);
  assert.equal(reopened.recovery?.tornTail?.path, SEGMENT_1, "the torn tail is reported");
  for (const e of reopened.entries(1, reopened.lastIndex() + 1, Number.POSITIVE_INFINITY)) assert.equal(text(e.data), `entry ${e.index} term 1`);
  // Writing continues where the torn tail was cut off.
  await reopened.persist({ entries: entries(reopened.lastIndex() + 1, 30, 2) });
  await reopened.close();
  const again = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 20 }));
  assert.equal(again.lastIndex(), 30);
  assert.equal(again.term(30), 2);
  await again.close();
});

test("a zeroed tail (preallocated space, or a write that never landed) ends the log cleanly", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 16 }));
  await storage.persist({ entries: entries(1, 10, 1) });
  const bytes = fs.fileBytes(SEGMENT_1);
  assert.equal(bytes.length, 1 << 16, "the segment is preallocated");
  assert.equal(bytes[bytes.length - 1], 0);
  await storage.close();
  const reopened = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 16 }));
  assert.equal(reopened.lastIndex(), 10);
  await reopened.close();
});

test("a flipped byte in the middle of the log refuses to start, naming the file and offset", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 20 }));
  for (let i = 0; i < 5; i++) await storage.persist({ entries: entries(i * 10 + 1, i * 10 + 10, 1) });
  await storage.close();
  // Find the record of entry 12 and damage its payload.
  const bytes = fs.fileBytes(SEGMENT_1);
  const at = Buffer.from(bytes).indexOf("entry 12 term 1");
  assert.ok(at > 0);
  fs.corrupt(SEGMENT_1, at + 3);
  await assert.rejects(DiskRaftStorage.open(DIR, options(fs)), (error: unknown) => {
    assert.ok(error instanceof StorageCorruptError);
    assert.equal(error.file, SEGMENT_1);
    assert.ok(error.offsetBytes < at && error.offsetBytes > at - 64, `offset ${error.offsetBytes} should be the record holding byte ${at}`);
    assert.match(error.message, /0000000000000001\.wal at byte offset \d+: checksum mismatch/);
    assert.match(error.message, /wiping its data directory/);
    return true;
  });
  // The lock was released: after repair (here: undo the damage) the directory opens.
  fs.corrupt(SEGMENT_1, at + 3);
  await (await DiskRaftStorage.open(DIR, options(fs))).close();
});

test("damage in an older segment refuses to start", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  for (let i = 0; i < 10; i++) await storage.persist({ entries: entries(i * 20 + 1, i * 20 + 20, 1, 50) });
  await storage.close();
  fs.corrupt(SEGMENT_1, 300);
  await assert.rejects(DiskRaftStorage.open(DIR, options(fs)), (error: unknown) => error instanceof StorageCorruptError && error.file === SEGMENT_1);
});

test("zeros followed by data in an older segment (a lost write) is corruption", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  for (let i = 0; i < 10; i++) await storage.persist({ hardState: { term: 1, vote: 2, commit: 0 }, entries: entries(i * 20 + 1, i * 20 + 20, 1, 50) });
  await storage.close();
  const bytes = fs.fileBytes(SEGMENT_1);
  const at = Buffer.from(bytes).indexOf(new Uint8Array(50).fill(3)); // inside entry 3's record
  const recordStart = at - 16 - 17;
  for (let offset = recordStart; offset < at + 50; offset++) if (bytes[offset] !== 0) fs.corrupt(SEGMENT_1, offset, bytes[offset]!);
  await assert.rejects(DiskRaftStorage.open(DIR, options(fs)), (error: unknown) => {
    assert.ok(error instanceof StorageCorruptError);
    assert.equal(error.file, SEGMENT_1);
    assert.equal(error.offsetBytes, recordStart);
    return true;
  });
});

test("a missing segment in the middle is corruption", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  for (let i = 0; i < 10; i++) await storage.persist({ entries: entries(i * 20 + 1, i * 20 + 20, 1, 50) });
  await storage.close();
  await fs.unlink(SEGMENT_2);
  await fs.fsyncDir(DIR);
  await assert.rejects(DiskRaftStorage.open(DIR, options(fs)), (error: unknown) => {
    assert.ok(error instanceof StorageCorruptError);
    assert.equal(error.file, SEGMENT_2);
    assert.match(error.message, /segment missing/);
    return true;
  });
});

test("an append at or below lastIndex truncates the conflicting suffix, also across segments and restarts", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  await storage.persist({ hardState: { term: 1, vote: 1, commit: 5 }, entries: entries(1, 60, 1, 60) });
  await storage.persist({ entries: entries(61, 120, 1, 60) });
  await storage.persist({ entries: entries(30, 35, 2) }); // follower: a new leader's log wins from 30 on
  assert.equal(storage.lastIndex(), 35);
  assert.equal(storage.term(29), 1);
  assert.equal(storage.term(30), 2);
  assert.throws(() => storage.entries(30, 37, 1000), RangeError);
  await assert.rejects(storage.persist({ entries: entries(40, 41, 2) }), /entries start at 40/);
  await storage.close();
  const reopened = await DiskRaftStorage.open(DIR, options(fs));
  assert.equal(reopened.lastIndex(), 35);
  assert.equal(text(reopened.entries(35, 36, 0)[0]!.data), "entry 35 term 2");
  assert.equal(reopened.term(29), 1);
  await reopened.close();
});

test("compaction deletes whole segments only, and the log restarts from the oldest kept segment", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  for (let i = 0; i < 20; i++) await storage.persist({ hardState: { term: 1, vote: 1, commit: i * 20 }, entries: entries(i * 20 + 1, i * 20 + 20, 1, 50) });
  const before = (await fs.readdir(DIR)).filter((name) => name.endsWith(".wal"));
  await assert.rejects(storage.compact(150), /not covered by a snapshot/);
  await storage.saveSnapshot({ index: 300, term: 1, conf: CONF }, new Uint8Array([3, 0, 0]));
  await storage.compact(250);
  assert.equal(storage.firstIndex(), 250);
  assert.equal(storage.term(249), 1);
  assert.throws(() => storage.entries(249, 251, 100), /compacted/);
  const after = (await fs.readdir(DIR)).filter((name) => name.endsWith(".wal"));
  assert.ok(after.length < before.length, "old segments are gone");
  assert.equal(after[after.length - 1], before[before.length - 1]);
  await storage.close();
  const reopened = await DiskRaftStorage.open(DIR, options(fs));
  assert.ok(reopened.firstIndex() <= 250 && reopened.firstIndex() > 1, `firstIndex ${reopened.firstIndex()}`);
  assert.equal(reopened.lastIndex(), 400);
  assert.equal(reopened.term(reopened.firstIndex() - 1), 1);
  assert.deepEqual(reopened.initialState().hardState, { term: 1, vote: 1, commit: 380 });
  assert.deepEqual(reopened.initialState().conf, CONF);
  assert.equal(reopened.snapshot().meta.index, 300);
  await reopened.close();
});

test("a snapshot received from the leader replaces the log and survives restart", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  await storage.persist({ hardState: { term: 1, vote: 1, commit: 3 }, entries: entries(1, 10, 1) });
  const conf = { ...CONF, voters: [1, 2, 3, 4] };
  await storage.persist({ hardState: { term: 3, vote: 0, commit: 100 }, entries: [], snapshot: { meta: { index: 100, term: 3, conf }, data: new Uint8Array([9]) } });
  assert.equal(storage.firstIndex(), 101);
  assert.equal(storage.lastIndex(), 100);
  assert.equal(storage.term(100), 3);
  // Entries the snapshot already covers are dropped, the rest appended.
  await storage.persist({ entries: entries(98, 105, 3) });
  assert.equal(storage.lastIndex(), 105);
  assert.equal(storage.entries(101, 102, 0)[0]!.index, 101);
  await storage.close();
  const reopened = await DiskRaftStorage.open(DIR, options(fs));
  assert.equal(reopened.firstIndex(), 101);
  assert.equal(reopened.lastIndex(), 105);
  assert.equal(reopened.term(100), 3);
  assert.deepEqual(reopened.initialState(), { hardState: { term: 3, vote: 0, commit: 100 }, conf });
  assert.deepEqual([...reopened.snapshot().data], [9]);
  await reopened.close();
});

test("entries evicted from the cache are read back from the segment files (cold path)", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs, { cacheSizeBytes: 2000 }));
  for (let i = 0; i < 10; i++) await storage.persist({ entries: entries(i * 30 + 1, i * 30 + 30, 1, 100) });
  const all = storage.entries(1, 301, Number.POSITIVE_INFINITY);
  assert.equal(all.length, 300);
  for (const e of all) assert.deepEqual(e.data, new Uint8Array(100).fill(e.index & 0xff));
  assert.equal(storage.entries(1, 301, 250).length, 2, "maxBytes bounds the answer");
  assert.equal(storage.entries(1, 301, 0).length, 1, "at least one entry");
  await storage.close();
});

test("a second open of the same directory fails with StorageLockedError", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs));
  await assert.rejects(DiskRaftStorage.open(DIR, options(fs)), StorageLockedError);
  await storage.close();
  await (await DiskRaftStorage.open(DIR, options(fs))).close();
});

test("group commit: persists issued together share writes and syncs", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open(DIR, options(fs, { segmentSizeBytes: 1 << 20 }));
  await storage.persist({ entries: entries(1, 1, 1) });
  const syncsBefore = fs.syncCount;
  const pending = [];
  for (let index = 2; index <= 101; index++) pending.push(storage.persist({ entries: entries(index, index, 1) }));
  await Promise.all(pending);
  assert.equal(storage.lastIndex(), 101);
  assert.ok(fs.syncCount - syncsBefore <= 3, `100 persists took ${fs.syncCount - syncsBefore} syncs`);
  await storage.close();
});

test("fsync never / interval: persist resolves after the write, a clean close syncs", async () => {
  for (const fsync of ["never", { intervalMs: 5 }] as const) {
    let fs = new MemoryFileSystem();
    const storage = await DiskRaftStorage.open(DIR, options(fs, { fsync }));
    await storage.persist({ entries: entries(1, 10, 1) });
    await storage.close();
    fs = fs.crash();
    const reopened = await DiskRaftStorage.open(DIR, options(fs, { fsync }));
    assert.equal(reopened.lastIndex(), 10, `fsync ${JSON.stringify(fsync)}`);
    await reopened.close();
  }
});

