// Snapshot files: atomic save, checksum, retention, chunked streaming and verified receipt.
import assert from "node:assert/strict";
import { test } from "node:test";
import { crc32c } from "@node-rs/crc32";
import { SnapshotChecksumError, StorageCorruptError } from "../../src/storage/errors.js";
import { MemoryFileSystem } from "../../src/storage/memory-fs.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { SnapshotStore, snapshotFileName } from "../../src/storage/snapshots.js";
import { CONF, entries } from "./helpers.js";

function bytes(sizeBytes: number, seed: number): Uint8Array {
  const data = new Uint8Array(sizeBytes);
  for (let i = 0; i < sizeBytes; i++) data[i] = (i * 7 + seed) & 0xff;
  return data;
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const result: Uint8Array[] = [];
  for await (const chunk of chunks) result.push(chunk);
  return result;
}

test("save then load round-trips meta and data; a crash before the rename leaves nothing", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/s");
  const store = new SnapshotStore(fs, "/s");
  const meta = { index: 10, term: 2, conf: CONF };
  await store.save(meta, bytes(5000, 1));
  const loaded = await store.load(meta);
  assert.deepEqual(loaded.meta, meta);
  assert.deepEqual(loaded.data, bytes(5000, 1));
  fs.crash();
  assert.deepEqual((await store.load(meta)).data, bytes(5000, 1), "save is durable once it resolves");

  fs.holdSyncs();
  void store.save({ index: 20, term: 2, conf: CONF }, bytes(100, 2)).catch(() => undefined);
  await new Promise((resolve) => setImmediate(resolve));
  fs.crash();
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
  const received: Uint8Array[] = [];
  for await (const chunk of leader.readSnapshotChunks(info.meta)) {
    received.push(chunk);
    await receiver.write(chunk);
  }
  await receiver.finish();
  const data = new Uint8Array(Buffer.concat(received));
  await follower.persist({ hardState: { term: 1, vote: 0, commit: 20 }, entries: [], snapshot: { meta: info.meta, data } });
  assert.equal(follower.firstIndex(), 21);
  assert.deepEqual(follower.snapshot().data, bytes(300, 5));
  await follower.close();
  await leader.close();
  const reopened = await DiskRaftStorage.open("/follower", { fs, segmentSizeBytes: 65536 });
  assert.equal(reopened.snapshot().meta.index, 20);
  assert.deepEqual(reopened.snapshot().data, bytes(300, 5));
  await reopened.close();
});
