// The snapshot thread (src/node/snapshot-thread.ts) reads the state store through its own lmdb-js
// handle: what it encodes must be exactly the snapshot the node would make on its event loop,
// and only of the state after the index it is asked for.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { getPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Broker } from "../../src/broker/broker.js";
import type { BrokerCommand } from "../../src/broker/commands.js";
import type { ReceiveReply } from "../../src/protocol/api.js";
import { nodeSnapshotParts } from "../../src/node/snapshot-codec.js";
import { SnapshotThread, SnapshotThreadError } from "../../src/node/snapshot-thread.js";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";

const MEMBERS = [{ id: 1, peer: "127.0.0.1:1", client: "127.0.0.1:2" }];
const MS = 1_780_000_000_000;

async function withStore(run: (path: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-thread-"));
  try {
    await run(join(root, "state"));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

// Entries of SENDs to a few mailboxes and a RECEIVE (leases and pending keys in the state).
function fill(broker: Broker, from: number, count: number): number {
  let index = from;
  for (let i = 0; i < count; i++) {
    const sends: BrokerCommand[] = [];
    for (let j = 0; j < 20; j++) sends.push({ op: "send", sender: "t", recipients: [`box${j % 3}`], body: new Uint8Array(300).fill(i + j) });
    broker.apply(++index, BigInt(MS + index) << 16n, sends);
    const [received] = broker.apply(++index, BigInt(MS + index) << 16n, [{ op: "receive", mailbox: "box1", max: 5 }]);
    assert.equal((received as ReceiveReply).messages.length, 5);
  }
  return index;
}

async function readAll(thread: SnapshotThread): Promise<Buffer> {
  const batches: Uint8Array[] = [];
  for (;;) {
    const { bytes, done } = await thread.next();
    batches.push(bytes);
    if (done) return Buffer.concat(batches);
  }
}

test("the snapshot thread encodes the same bytes as the event loop, at the lowest priority", { timeout: 30_000 }, async () => {
  await withStore(async (path) => {
    const kv = new LmdbKv({ path, mapSizeBytes: 1 << 30 });
    const broker = new Broker(kv);
    const thread = new SnapshotThread({ store: { path, mapSizeBytes: 1 << 30 }, nice: 19, batchBytes: 4096 });
    try {
      const niceApplied = await thread.started();
      if (process.platform === "linux") {
        assert.equal(niceApplied, true);
        // One thread of this process runs at nice 19 now; the main thread keeps its own.
        const niceOf = (task: string): number => Number(readFileSync(`/proc/self/task/${task}/stat`, "utf8").split(") ")[1]!.split(" ")[16]);
        const nices = readdirSync("/proc/self/task").map(niceOf);
        assert.ok(nices.includes(19), `thread nice values ${nices.join(",")}`);
        assert.equal(niceOf(String(process.pid)), getPriority(process.pid));
        assert.notEqual(getPriority(process.pid), 19);
      }
      const index = fill(broker, 0, 40);
      const expected = Buffer.concat([...nodeSnapshotParts(MEMBERS, broker.snapshot().chunks, 77n)]);
      assert.ok(expected.length > 10 * 4096, "several batches");
      assert.equal(await thread.open(index, MEMBERS, 77n), true);
      assert.deepEqual(await readAll(thread), expected);
      // Once more from the same thread, after more entries: the new state, not the old.
      const later = fill(broker, index, 5);
      const expectedLater = Buffer.concat([...nodeSnapshotParts(MEMBERS, broker.snapshot().chunks, 78n)]);
      assert.equal(await thread.open(later, MEMBERS, 78n), true);
      assert.deepEqual(await readAll(thread), expectedLater);
    } finally {
      await thread.close();
      await kv.close();
    }
  });
});

test("the snapshot thread refuses a read that holds another index than the one asked for", { timeout: 30_000 }, async () => {
  await withStore(async (path) => {
    const kv = new LmdbKv({ path, mapSizeBytes: 1 << 30, commitIntervalMs: 5 });
    const broker = new Broker(kv);
    const thread = new SnapshotThread({ store: { path, mapSizeBytes: 1 << 30 }, nice: 19, batchBytes: 1 << 20 });
    try {
      await thread.started();
      const index = fill(broker, 0, 3);
      kv.commit();
      assert.equal(await thread.open(index + 1, MEMBERS, 0n), false, "an index the store does not hold yet");
      // A commit slipped in between the node's commit and the thread's read: the thread sees it.
      const later = fill(broker, index, 1);
      kv.commit();
      assert.equal(await thread.open(index, MEMBERS, 0n), false, "the state moved past the index");
      assert.equal(await thread.open(later, MEMBERS, 0n), true);
      await thread.next(); // part of it, then dropped
      thread.cancel();
      await assert.rejects(thread.next(), /no snapshot is open/);
      assert.equal(await thread.open(later, MEMBERS, 0n), true, "open again after a cancel");
      await readAll(thread);
    } finally {
      await thread.close();
      await kv.close();
    }
    await assert.rejects(thread.open(1, MEMBERS, 0n), SnapshotThreadError);
  });
});

test("LmdbKv.holdCommits keeps its timer from committing until released; an explicit commit goes through", { timeout: 30_000 }, async () => {
  await withStore(async (path) => {
    const kv = new LmdbKv({ path, mapSizeBytes: 1 << 30, commitIntervalMs: 5 });
    const broker = new Broker(kv);
    const thread = new SnapshotThread({ store: { path, mapSizeBytes: 1 << 30 }, nice: 19, batchBytes: 1 << 20 });
    const committedAt = async (index: number): Promise<boolean> => {
      const opened = await thread.open(index, MEMBERS, 0n);
      thread.cancel();
      return opened;
    };
    const pause = () => new Promise((resolve) => setTimeout(resolve, 60));
    try {
      await thread.started();
      const index = fill(broker, 0, 1);
      await pause();
      assert.equal(await committedAt(index), true, "the timer commits");
      const release = kv.holdCommits();
      const held = fill(broker, index, 1);
      await pause();
      assert.equal(await committedAt(held), false, "not committed while held");
      assert.equal(await committedAt(index), true, "the last commit stands");
      release();
      await pause();
      assert.equal(await committedAt(held), true, "committed by the timer once released");
      const again = kv.holdCommits();
      const explicit = fill(broker, held, 1);
      kv.commit();
      assert.equal(await committedAt(explicit), true, "an explicit commit is not held");
      again();
    } finally {
      await thread.close();
      await kv.close();
    }
  });
});
