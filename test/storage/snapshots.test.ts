// Snapshot files: atomic save, checksum, retention, chunked streaming and verified receipt.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { crc32c } from "@node-rs/crc32";
import { SnapshotChecksumError, StorageCorruptError } from "../../src/storage/errors.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { ReceivedSnapshot, SnapshotStore, snapshotFileName } from "../../src/storage/snapshots.js";
import { CONF, entries } from "./helpers.js";

function bytes(sizeBytes: number, seed: number): Uint8Array {
  const data = new Uint8Array(sizeBytes);
  for (let i = 0; i < sizeBytes; i++) data[i] = (i * 7 + seed) & 0xff;
  return data;
}

// A storage at /node holding entries 1 to lastIndex and a snapshot of `data` at index 20.
async function storageWithSnapshot(fs: MemoryFileSystem, lastIndex: number, data: Uint8Array) {
  const storage = await DiskRaftStorage.open("/node", { fs, initialConf: CONF, segmentSizeBytes: 65536 });
  await storage.persist({ hardState: { term: 1, vote: 1, commit: lastIndex }, entries: entries(1, lastIndex, 1) });
  const meta = { index: 20, term: 1, conf: CONF };
  await storage.saveSnapshot(meta, data);
  return { storage, meta };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const result: Uint8Array[] = [];
  for await (const chunk of chunks) result.push(chunk);
  return result;
}

test("save then load round-trips meta and data; a crash before the rename leaves nothing", async () => {
  let fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  let store = new SnapshotStore(fs, "/s");
  const meta = { index: 10, term: 2, conf: CONF };
  await store.save(meta, bytes(5000, 1));
  const loaded = await store.load(meta);
  assert.deepEqual(loaded.meta, meta);
  assert.deepEqual(loaded.data, bytes(5000, 1));
  fs = fs.crash();
  store = new SnapshotStore(fs, "/s");
  assert.deepEqual((await store.load(meta)).data, bytes(5000, 1), "save is durable once it resolves");

  fs.holdSyncs();
  void store.save({ index: 20, term: 2, conf: CONF }, bytes(100, 2)).catch(() => undefined);
  await new Promise((resolve) => setImmediate(resolve));
  fs = fs.crash();
  assert.deepEqual(await fs.readdir("/s"), [snapshotFileName(meta)]);
});

test("a damaged snapshot file is detected by its checksum", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  const store = new SnapshotStore(fs, "/s");
  const meta = { index: 10, term: 2, conf: CONF };
  await store.save(meta, bytes(5000, 1));
  fs.corrupt(`/s/${snapshotFileName(meta)}`, 3000);
  await assert.rejects(store.load(meta), StorageCorruptError);
  await assert.rejects(collect(store.readChunks(meta)), /checksum mismatch/);
});

test("the newest K snapshots are kept", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  const store = new SnapshotStore(fs, "/s", { retainCount: 2 });
  for (const index of [10, 20, 30, 40]) await store.save({ index, term: 1, conf: CONF }, bytes(10, index));
  await store.prune();
  assert.deepEqual((await store.list()).map((file) => file.index), [40, 30]);
});

test("chunked streaming: a receiver installs only what matches the announced checksum", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/leader");
  await fs.mkdir("/follower");
  const leader = new SnapshotStore(fs, "/leader", { chunkBytes: 1000 });
  const follower = new SnapshotStore(fs, "/follower");
  const meta = { index: 50, term: 3, conf: CONF };
  const data = bytes(4500, 9);
  await leader.save(meta, data);
  const info = await leader.info(meta);
  assert.equal(info.checksum, crc32c(data));
  const chunks = await collect(leader.readChunks(meta));
  assert.deepEqual(chunks.map((chunk) => chunk.length), [1000, 1000, 1000, 1000, 500]);

  // A damaged chunk in transit: rejected at finish, nothing installed, no temporary file left.
  const bad = await follower.receive(meta, info.dataBytes, info.checksum);
  for (const [position, chunk] of chunks.entries()) {
    const sent = chunk.slice();
    if (position === 2) sent[10]! ^= 0x40;
    await bad.write(sent);
  }
  await assert.rejects(bad.finish(), SnapshotChecksumError);
  assert.deepEqual(await fs.readdir("/follower"), []);

  // Too short: rejected too.
  const short = await follower.receive(meta, info.dataBytes, info.checksum);
  await short.write(chunks[0]!);
  await assert.rejects(short.finish(), /received 1000 of 4500 bytes/);

  const good = await follower.receive(meta, info.dataBytes, info.checksum);
  for (const chunk of chunks) await good.write(chunk);
  await good.finish();
  assert.deepEqual((await follower.load(meta)).data, data);
});

test("DiskRaftStorage: saveSnapshot, streaming and a received snapshot installed through persist", async () => {
  const fs = new MemoryFileSystem();
  const leader = await DiskRaftStorage.open("/leader", { fs, initialConf: CONF, snapshotChunkBytes: 64, segmentSizeBytes: 65536 });
  await leader.persist({ hardState: { term: 1, vote: 1, commit: 20 }, entries: entries(1, 20, 1) });
  await leader.saveSnapshot({ index: 20, term: 1, conf: CONF }, bytes(300, 5));
  assert.equal(leader.snapshot().meta.index, 20);
  const info = await leader.snapshotInfo({ index: 20, term: 1 });

  const follower = await DiskRaftStorage.open("/follower", { fs, initialConf: CONF, segmentSizeBytes: 65536 });
  const receiver = await follower.receiveSnapshot(info.meta, info.dataBytes, info.checksum);
  for await (const chunk of leader.readSnapshotChunks(info.meta)) await receiver.write(chunk);
  const received = await receiver.finish();
  assert.ok(received instanceof ReceivedSnapshot, "a received snapshot is its file, not bytes in memory");
  assert.throws(() => received.data, /received to its file/);
  await follower.persist({ hardState: { term: 1, vote: 0, commit: 20 }, entries: [], snapshot: received });
  assert.equal(follower.firstIndex(), 21);
  assert.deepEqual(follower.snapshot().data, bytes(300, 5));
  await follower.close();
  await leader.close();
  const reopened = await DiskRaftStorage.open("/follower", { fs, segmentSizeBytes: 65536 });
  assert.equal(reopened.snapshot().meta.index, 20);
  assert.deepEqual(reopened.snapshot().data, bytes(300, 5));
  await reopened.close();
});

test("a snapshot written chunk by chunk loads back whole and checked; one not finished leaves nothing", async () => {
  let fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  let store = new SnapshotStore(fs, "/s");
  const meta = { index: 30, term: 3, conf: CONF };
  const pieces = [bytes(1000, 1), bytes(0, 2), bytes(70_000, 3), bytes(1, 4)];
  const writer = await store.create(meta);
  for (const piece of pieces) await writer.write(piece);
  const info = await writer.finish();
  const whole = new Uint8Array(Buffer.concat(pieces));
  assert.equal(info.dataBytes, whole.length);
  assert.equal(info.checksum, crc32c(whole));
  assert.deepEqual(await store.info(meta), info, "the header holds the size and checksum of what was written");
  fs = fs.crash();
  store = new SnapshotStore(fs, "/s");
  const loaded = await store.load(meta);
  assert.deepEqual(loaded.meta, meta);
  assert.deepEqual(loaded.data, whole, "finish() is durable once it resolves");
  assert.deepEqual(Buffer.concat(await collect(store.readChunks(meta))), Buffer.from(whole));

  // Aborted, or cut short by a crash: no snapshot of that name appears.
  const aborted = await store.create({ index: 40, term: 3, conf: CONF });
  await aborted.write(bytes(500, 5));
  await aborted.abort();
  const crashed = await store.create({ index: 50, term: 3, conf: CONF });
  await crashed.write(bytes(500, 6));
  fs = fs.crash();
  store = new SnapshotStore(fs, "/s");
  await store.removeTemporaryFiles();
  assert.deepEqual(await fs.readdir("/s"), [snapshotFileName(meta)]);
});

test("load checks the checksum of a snapshot read in pieces", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  const store = new SnapshotStore(fs, "/s");
  const meta = { index: 10, term: 2, conf: CONF };
  const writer = await store.create(meta);
  const data = bytes(40 * 1024 * 1024 + 3, 9); // more than one 16 MiB piece
  await writer.write(data);
  await writer.finish();
  assert.deepEqual((await store.load(meta)).data, data);
  fs.corrupt(`/s/${snapshotFileName(meta)}`, 33 * 1024 * 1024); // in the third piece
  await assert.rejects(store.load(meta), /checksum mismatch/);
});

test("DiskRaftStorage: a snapshot created chunk by chunk becomes the latest once adopted, and only if it still fits the log", async () => {
  const fs = new MemoryFileSystem();
  const storage = await DiskRaftStorage.open("/node", { fs, initialConf: CONF, segmentSizeBytes: 65536 });
  await storage.persist({ hardState: { term: 1, vote: 1, commit: 20 }, entries: entries(1, 20, 1) });
  const meta = { index: 15, term: 1, conf: CONF };
  const writer = await storage.createSnapshot(meta);
  await writer.write(bytes(100, 1));
  await writer.write(bytes(200, 2));
  await writer.finish();
  assert.throws(() => storage.snapshot(), /no snapshot yet/, "written is not adopted");
  const loaded = await storage.openSnapshot(meta);
  await storage.adoptSnapshot(loaded);
  assert.equal(storage.snapshot().meta.index, 15);
  assert.deepEqual(storage.snapshot().data, new Uint8Array(Buffer.concat([bytes(100, 1), bytes(200, 2)])));
  await storage.compact(16);
  assert.throws(() => storage.adoptSnapshot({ meta: { index: 10, term: 1, conf: CONF }, data: bytes(1, 1) }), /outside the log/);
  assert.throws(() => storage.createSnapshot({ index: 21, term: 1, conf: CONF }), /outside the log/);
  await storage.close();
  const reopened = await DiskRaftStorage.open("/node", { fs, segmentSizeBytes: 65536 });
  assert.equal(reopened.snapshot().meta.index, 15);
  assert.deepEqual(reopened.snapshot().data, new Uint8Array(Buffer.concat([bytes(100, 1), bytes(200, 2)])));
  await reopened.close();
});

// A full garbage collection, so that a WeakRef whose target nothing else holds is cleared.
async function collectGarbage(): Promise<void> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  await new Promise((resolve) => setImmediate(resolve)); // WeakRef targets live to the end of a job
  gc();
}

test("DiskRaftStorage keeps its latest snapshot on disk: the data is read back (and checked) once nothing holds it", async () => {
  const fs = new MemoryFileSystem();
  const { storage, meta } = await storageWithSnapshot(fs, 20, bytes(3000, 7));
  (() => {
    const first = storage.snapshot().data;
    assert.equal(storage.snapshot().data, first, "a copy still held is handed out again");
    assert.deepEqual(first, bytes(3000, 7));
  })();

  await collectGarbage();
  assert.deepEqual(storage.snapshot().data, bytes(3000, 7), "read back from the file");
  fs.corrupt(`/node/${snapshotFileName(meta)}`, 2000);
  await collectGarbage();
  assert.throws(() => storage.snapshot().data, (error: unknown) => error instanceof StorageCorruptError && /checksum mismatch/.test(error.message));
  assert.equal(storage.snapshot().meta.index, 20);
  await storage.close();
});

test("the latest snapshot streams from its file in chunks, its checksum checked; a newer one replaces it", async () => {
  const fs = new MemoryFileSystem();
  const { storage, meta } = await storageWithSnapshot(fs, 30, bytes(1000, 3));
  const first = storage.snapshot();
  assert.equal(first.dataBytes, 1000);
  const read = async (snapshot: typeof first) => {
    const chunks: Uint8Array[] = [];
    const reader = snapshot.readChunks!(300);
    for (let next = await reader.next(); !next.done; next = await reader.next()) chunks.push(next.value);
    return chunks;
  };
  const chunks = await read(first);
  assert.deepEqual(chunks.map((chunk) => chunk.length), [300, 300, 300, 100]);
  assert.deepEqual(new Uint8Array(Buffer.concat(chunks)), bytes(1000, 3));
  fs.corrupt(`/node/${snapshotFileName(meta)}`, 950);
  await assert.rejects(read(first), /checksum mismatch/);

  await storage.saveSnapshot({ index: 30, term: 1, conf: CONF }, bytes(500, 4));
  assert.equal(storage.snapshot().meta.index, 30);
  assert.deepEqual(new Uint8Array(Buffer.concat(await read(storage.snapshot()))), bytes(500, 4));
  await storage.close();
});

test("the latest snapshot reads front to back in pieces from its file, the checksum checked at the end; startup finds a damaged one", async () => {
  const fs = new MemoryFileSystem();
  const { storage, meta } = await storageWithSnapshot(fs, 20, bytes(5000, 9));
  await collectGarbage(); // no copy in memory: the reader reads the file
  const readAll = (sizes: number[]) => {
    const reader = storage.snapshot().reader();
    const pieces = sizes.map((size) => reader.read(size));
    assert.equal(reader.remaining(), 0);
    reader.finish();
    return new Uint8Array(Buffer.concat(pieces));
  };
  assert.deepEqual(readAll([1, 999, 4000]), bytes(5000, 9));
  assert.throws(() => storage.snapshot().reader().read(5001), /ends before a piece of 5001 bytes/);
  fs.corrupt(`/node/${snapshotFileName(meta)}`, 4500);
  await collectGarbage();
  assert.throws(() => readAll([2500, 2500]), (error: unknown) => error instanceof StorageCorruptError && /checksum mismatch/.test(error.message));
  await storage.close();
  // Reopened, the damaged snapshot is found (its data read through once) and not used; the log
  // still holds every entry, so the storage opens without one.
  const reopened = await DiskRaftStorage.open("/node", { fs, segmentSizeBytes: 65536 });
  assert.throws(() => reopened.snapshot(), /no snapshot/);
  assert.equal(reopened.firstIndex(), 1);
  await reopened.close();
});
