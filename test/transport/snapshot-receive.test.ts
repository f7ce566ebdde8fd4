// A snapshot from a peer written to its sink as it arrives, over real TCP on 127.0.0.1: to the
// snapshot's file (the node's sink, DiskRaftStorage.receiveSnapshot) with the storage adopting
// that file as it is; a slow sink slows the sender instead of filling memory; a stream cut off or
// failing its checksum is dropped, its partial file removed, and the connection serves on.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { ConfState, Message } from "../../src/raft/types.js";
import { DiskRaftStorage } from "../../src/storage/raft-storage.js";
import { ReceivedSnapshot } from "../../src/storage/snapshots.js";
import type { SnapshotSink, SnapshotSinkFactory } from "../../src/transport/inbound-connection.js";
import { closeAll, message, messagesFrom, startNode, type TestNode, waitConnected, waitFor, wire } from "./helpers.js";

const CONF: ConfState = { voters: [1, 2], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };

function snapshotMessage(index: number, data: Uint8Array): Message {
  const snapshot = message(1, 2, "snapshot", index);
  snapshot.snapshot = { meta: { index, term: 1, conf: CONF }, data };
  return snapshot;
}

// Two transports, node 2 receiving snapshots through `sink`, and node 2's storage in a temp dir.
async function pair(sink: (storage: DiskRaftStorage) => SnapshotSinkFactory, onStatus?: (delivered: boolean) => void) {
  const dir = await mkdtemp(join(tmpdir(), "ferry-snapshot-receive-"));
  const storage = await DiskRaftStorage.open(dir, { initialConf: CONF });
  const nodes = [
    await startNode(1, onStatus === undefined ? {} : { onSnapshotStatus: (_to, delivered) => onStatus(delivered) }),
    await startNode(2, { receiveSnapshot: sink(storage) }),
  ];
  wire(nodes);
  await waitConnected(nodes);
  const cleanup = async () => {
    await closeAll(nodes);
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { a: nodes[0] as TestNode, b: nodes[1] as TestNode, storage, dir, cleanup };
}

const toFile = (storage: DiskRaftStorage): SnapshotSinkFactory => (meta, dataBytes, checksum) => storage.receiveSnapshot(meta, dataBytes, checksum!);

test("a snapshot from a peer is written to its file as it arrives; persist adopts the file, which reads back intact", async () => {
  const { a, b, storage, cleanup } = await pair(toFile);
  try {
    const data = randomBytes(3 * 1024 * 1024 + 7);
    a.transport.send([snapshotMessage(300, data)]);
    await waitFor("snapshot delivered", () => messagesFrom(b, 1).some((m) => m.type === "snapshot"), 20_000);
    const got = messagesFrom(b, 1).find((m) => m.type === "snapshot")!.snapshot!;
    assert.ok(got instanceof ReceivedSnapshot, "delivered as the file written, not as bytes in memory");
    assert.throws(() => got.data, /received to its file/);
    assert.equal(got.dataBytes, data.length);
    await storage.persist({ hardState: { term: 1, vote: 0, commit: 300 }, entries: [], snapshot: got });
    const stored = storage.snapshot();
    assert.equal(stored.meta.index, 300);
    const reader = stored.reader();
    const pieces: Uint8Array[] = [];
    while (reader.remaining() > 0) pieces.push(reader.read(Math.min(1_000_000, reader.remaining())));
    reader.finish();
    assert.ok(Buffer.concat(pieces).equals(data), "the adopted file holds the bytes sent");
  } finally {
    await cleanup();
  }
});

// A sink that holds every write until released, around the file sink.
function gated(inner: SnapshotSinkFactory, record: { writes: number; aborts: number; open: Promise<void> }): SnapshotSinkFactory {
  return async (meta, dataBytes, checksum) => {
    const sink = await inner(meta, dataBytes, checksum);
    return {
      write: async (chunk) => {
        await record.open;
        record.writes++;
        await sink.write(chunk);
      },
      finish: () => sink.finish(),
      abort: async () => {
        await sink.abort();
        record.aborts++; // counted once the partial file is gone
      },
    } satisfies SnapshotSink;
  };
}

test("a sink slower than the network stops the connection reading: the sender waits instead of the receiver's memory filling", async () => {
  let release!: () => void;
  const record = { writes: 0, aborts: 0, open: new Promise<void>((resolve) => (release = resolve)) };
  const statuses: boolean[] = [];
  const { a, b, cleanup } = await pair((storage) => gated(toFile(storage), record), (delivered) => statuses.push(delivered));
  try {
    const data = randomBytes(48 * 1024 * 1024);
    a.transport.send([snapshotMessage(400, data)]);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    // Without the pause the whole 48 MiB would be read into the receiver's queue and the sender
    // would have finished writing it (its status reported).
    assert.deepEqual(statuses, [], "the sender cannot finish while the receiver's sink is stalled");
    assert.equal(record.writes, 0);
    release();
    await waitFor("snapshot delivered", () => messagesFrom(b, 1).some((m) => m.type === "snapshot"), 30_000);
    await waitFor("status", () => statuses.length === 1, 10_000);
    assert.deepEqual(statuses, [true]);
    assert.equal(record.writes, Math.ceil(data.length / (256 * 1024)));
    assert.equal(record.aborts, 0);
  } finally {
    await cleanup();
  }
});

test("a stream cut off mid-way is aborted (no partial file left); one failing its checksum is dropped and the connection serves on", async () => {
  let release!: () => void;
  const record = { writes: 0, aborts: 0, open: new Promise<void>((resolve) => (release = resolve)) };
  let lie = false;
  const { a, b, dir, cleanup } = await pair((storage) => {
    const file = gated(toFile(storage), record);
    // `lie`: the receiver expects another checksum than the sender's (damage in transit).
    return (meta, dataBytes, checksum) => file(meta, dataBytes, lie ? (checksum! ^ 1) >>> 0 : checksum);
  });
  try {
    // Larger than the receiver's unwritten bytes and the kernel's socket buffers together, so the
    // stream cannot have arrived whole while the sink is held.
    a.transport.send([snapshotMessage(500, randomBytes(48 * 1024 * 1024))]);
    await waitFor("stream started", () => b.logs.some((l) => l.event === "snapshot-receive-start"));
    for (let tries = 0; !(await readdir(dir)).some((name) => name.startsWith("snapshot-") && name.endsWith(".tmp")); tries++) {
      assert.ok(tries < 500, "the snapshot is being written to a temporary file");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // Cut the sender off mid-stream: node 1 goes away.
    await a.transport.close();
    release();
    await waitFor("the stream abandoned and its sink aborted", () => record.aborts === 1, 10_000);
    assert.deepEqual((await readdir(dir)).filter((name) => name.includes("snapshot")), [], "no snapshot file, partial or whole");
    assert.ok(b.logs.some((l) => l.event === "snapshot-receive-abandoned"), "the abandoned stream is logged");
    assert.equal(messagesFrom(b, 1).filter((m) => m.type === "snapshot").length, 0);
  } finally {
    await cleanup();
  }

  // A fresh pair: a snapshot whose checksum does not match is not delivered; what follows is.
  const record2 = { writes: 0, aborts: 0, open: Promise.resolve() };
  lie = true;
  const second = await pair((storage) => {
    const file = gated(toFile(storage), record2);
    return (meta, dataBytes, checksum) => file(meta, dataBytes, lie ? (checksum! ^ 1) >>> 0 : checksum);
  });
  try {
    second.a.transport.send([snapshotMessage(600, randomBytes(1024 * 1024 + 3))]);
    await waitFor("checksum failure logged", () => second.b.logs.some((l) => l.event === "snapshot-receive-failed"), 10_000);
    second.a.transport.send([message(1, 2, "heartbeat", 1)]);
    await waitFor("the heartbeat after it delivered", () => messagesFrom(second.b, 1).some((m) => m.type === "heartbeat"));
    assert.equal(messagesFrom(second.b, 1).filter((m) => m.type === "snapshot").length, 0, "the damaged snapshot is never delivered");
    assert.deepEqual((await readdir(second.dir)).filter((name) => name.includes("snapshot")), [], "its file never takes its name");
    lie = false;
    const data = randomBytes(1024 * 1024 + 3);
    second.a.transport.send([snapshotMessage(601, data)]);
    await waitFor("the next snapshot delivered", () => messagesFrom(second.b, 1).some((m) => m.type === "snapshot"), 10_000);
  } finally {
    await second.cleanup();
  }
});

test("a snapshot over snapshotBytesMax is refused before anything is written: the connection closes, nothing is delivered", async () => {
  let sinks = 0;
  const nodes = [await startNode(1), await startNode(2, { snapshotBytesMax: 1024 * 1024, receiveSnapshot: async () => { sinks++; throw new Error("no sink expected"); } })];
  const [a, b] = nodes as [TestNode, TestNode];
  try {
    wire(nodes);
    await waitConnected(nodes);
    a.transport.send([snapshotMessage(700, randomBytes(1024 * 1024 + 1))]);
    await waitFor("the violation logged", () => b.logs.some((l) => l.event === "peer-protocol-violation" && /exceeds snapshotBytesMax 1048576/.test(String(l.fields.reason))));
    assert.equal(sinks, 0);
    assert.equal(messagesFrom(b, 1).filter((m) => m.type === "snapshot").length, 0);
  } finally {
    await closeAll(nodes);
  }
});
