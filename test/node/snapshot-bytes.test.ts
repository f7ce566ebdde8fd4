// Snapshots are also taken by the bytes of log applied since the last one (snapshotLogBytes), so
// the log on disk stays bounded when entries are large; and the margin kept below a snapshot for
// slow followers is cut to a quarter of those bytes.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { NODE_DEFAULTS, type NodeConfig, validateConfig } from "../../src/node/config.js";
import { catchUpMargin, FerryNode } from "../../src/node/node.js";
import type { SnapshotThread } from "../../src/node/snapshot-thread.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "snapshot-bytes-test" };

interface NodeInternals {
  storage: { firstIndex(): number };
  lastSnapshotIndex: number;
  snapshotThread: SnapshotThread | undefined;
  threadOpens: number; // counted by delayThreadOpens
}

test("catchUpMargin: the entry margin, cut to a quarter of snapshotLogBytes at the average entry size", () => {
  const config = { snapshotCatchUpEntries: 5_000, snapshotLogBytes: 256 * 1024 * 1024 };
  assert.equal(catchUpMargin(config, 20_000, 20_000 * 100), 5_000, "small entries: the entry margin");
  assert.equal(catchUpMargin(config, 1_000, 1_000 * 1024 * 1024), 64, "1 MiB entries: 64 MiB of them");
  assert.equal(catchUpMargin(config, 0, 0), 5_000, "nothing measured yet");
});

for (const openDelayMs of [0, 40]) {
  // With a delay, the snapshot thread opens its read while later entries apply: their bytes count
  // toward the next snapshot. (Zeroing the count after the open lost them, and the next margin,
  // taken at a too-small average entry size, kept 4 to 6 entries: a CI failure.)
  const variant = openDelayMs === 0 ? "" : `, also when the snapshot thread opens ${openDelayMs} ms late`;
  test(`a node snapshots and compacts once snapshotLogBytes of entries were applied, long before snapshotEntries${variant}`, { timeout: 60_000 }, async () => {
    const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-bytes-"));
    const nodes: FerryNode[] = [];
    try {
      // 40 KiB of log per snapshot; 4 KiB bodies: a snapshot every ~10 entries, never by count.
      await startInProcessCluster(root, nodes, { snapshotEntries: 1_000_000, snapshotLogBytes: 40 * 1024, snapshotCatchUpEntries: 1_000, entryBytesMax: 8 * 1024 });
      if (openDelayMs > 0) for (const node of nodes) delayThreadOpens(node, openDelayMs);
      await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
      const leader = nodes.find((node) => node.raftState().isLeader)!;
      const body = new Uint8Array(4096).fill(7);
      // With the delay, entries apply during every thread snapshot's open; enough that several follow.
      const sends = openDelayMs === 0 ? 60 : 150;
      for (let i = 0; i < sends; i++) await leader.execute({ op: "send", recipients: ["bytes"], body }, session);
      for (const node of nodes) {
        const inner = node as unknown as NodeInternals;
        await waitFor("a snapshot by bytes, and the log compacted below it", () => inner.lastSnapshotIndex > 0 && inner.storage.firstIndex() > 1);
        // The margin: at most a quarter of 40 KiB of ~4 KiB entries stays below the snapshot.
        assert.ok(inner.lastSnapshotIndex - inner.storage.firstIndex() <= 3, `kept ${inner.lastSnapshotIndex - inner.storage.firstIndex()} entries below the snapshot`);
      }
      if (openDelayMs > 0) {
        const opened = nodes.reduce((sum, node) => sum + (node as unknown as NodeInternals).threadOpens, 0);
        assert.ok(opened > 0, "the thread made snapshots");
      }
    } finally {
      await Promise.allSettled(nodes.map((node) => node.stop()));
      await rm(root, { recursive: true, force: true });
    }
  });
}

// Makes the node's snapshot thread answer open() delayMs late, counting the opens.
function delayThreadOpens(node: FerryNode, delayMs: number): void {
  const inner = node as unknown as NodeInternals;
  inner.threadOpens = 0;
  const thread = inner.snapshotThread!;
  const open = thread.open.bind(thread);
  thread.open = async (...args) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    const opened = await open(...args);
    if (opened) inner.threadOpens++;
    return opened;
  };
}

test("the configuration refuses a snapshotLogBytes under 4 entries of entryBytesMax, and a negative catch-up margin", () => {
  const config: NodeConfig = {
    ...NODE_DEFAULTS,
    id: 1,
    dataDir: "/tmp/unused",
    clientListen: "127.0.0.1:1",
    peerListen: "127.0.0.1:2",
    members: [{ id: 1, peer: "127.0.0.1:2", client: "127.0.0.1:1" }],
  };
  validateConfig(config);
  assert.throws(() => validateConfig({ ...config, snapshotLogBytes: 4 * config.entryBytesMax - 1 }), /snapshotLogBytes must be at least 4 x entryBytesMax/);
  assert.throws(() => validateConfig({ ...config, snapshotCatchUpEntries: -1 }), /snapshotCatchUpEntries must be a whole number/);
});

test("a restarted node counts the log it holds above its latest snapshot toward the next one", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-bytes-restart-"));
  const nodes: FerryNode[] = [];
  try {
    const overrides = { snapshotEntries: 1_000_000, snapshotLogBytes: 1024 * 1024, snapshotCatchUpEntries: 1_000, entryBytesMax: 64 * 1024 };
    await startInProcessCluster(root, nodes, overrides);
    await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const body = new Uint8Array(8192).fill(1);
    for (let i = 0; i < 40; i++) await leader.execute({ op: "send", recipients: ["restart"], body }, session);
    const before = (leader as unknown as { bytesSinceSnapshot: number }).bytesSinceSnapshot;
    assert.ok(before >= 40 * 8192, `counted ${before} bytes`);
    await Promise.allSettled(nodes.map((node) => node.stop()));
    const restarted = await FerryNode.start({ ...nodes[0]!.config, ...overrides });
    nodes.splice(0, nodes.length, restarted);
    const counted = (restarted as unknown as { bytesSinceSnapshot: number }).bytesSinceSnapshot;
    assert.ok(counted >= 40 * 8192, `a restart counted ${counted} bytes of log, not 0`);
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});
