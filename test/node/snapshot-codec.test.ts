// The node snapshot's layout: written in parts, read back front to back a piece at a time.
import assert from "node:assert/strict";
import { test } from "node:test";
import { nodeSnapshotParts, readNodeSnapshot } from "../../src/node/snapshot-codec.js";
import { MemorySnapshotReader } from "../../src/storage/snapshots.js";

const members = [{ id: 1, peer: "127.0.0.1:1", client: "127.0.0.1:2" }];

test("a node snapshot reads back its head at once and its broker chunks one by one, then finishes its reader", () => {
  const chunks = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(70_000).fill(9)];
  const data = new Uint8Array(Buffer.concat([...nodeSnapshotParts(members, chunks, 123n)]));
  let finished = 0;
  const inner = new MemorySnapshotReader(data);
  const reader = { remaining: () => inner.remaining(), read: (bytes: number) => inner.read(bytes), finish: () => { finished++; inner.finish(); } };
  const snapshot = readNodeSnapshot(reader);
  assert.deepEqual(snapshot.members, members);
  assert.equal(snapshot.lastTimestamp, 123n);
  assert.equal(finished, 0, "the broker chunks are read only when walked");
  assert.deepEqual([...snapshot.broker], chunks);
  assert.equal(finished, 1, "walking them to the end finishes the reader (its checksum check)");
});

test("a truncated node snapshot throws instead of restoring part of it", () => {
  const data = new Uint8Array(Buffer.concat([...nodeSnapshotParts(members, [new Uint8Array(100)], 0n)]));
  assert.throws(() => [...readNodeSnapshot(new MemorySnapshotReader(data.subarray(0, data.length - 10))).broker], /runs past/);
  assert.throws(() => readNodeSnapshot(new MemorySnapshotReader(new Uint8Array(0))), /empty/);
});
