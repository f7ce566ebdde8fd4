// Snapshots are also taken by the bytes of log applied since the last one (snapshotLogBytes), so
// the log on disk stays bounded when entries are large; and the margin kept below a snapshot for
// slow followers is cut to a quarter of those bytes.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type FerryNode, catchUpMargin } from "../../src/node/node.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "snapshot-bytes-test" };

interface NodeInternals {
  storage: { firstIndex(): number };
  lastSnapshotIndex: number;
}

test("catchUpMargin: the entry margin, cut to a quarter of snapshotLogBytes at the average entry size", () => {
  const config = { snapshotCatchUpEntries: 5_000, snapshotLogBytes: 256 * 1024 * 1024 };
  assert.equal(catchUpMargin(config, 20_000, 20_000 * 100), 5_000, "small entries: the entry margin");
  assert.equal(catchUpMargin(config, 1_000, 1_000 * 1024 * 1024), 64, "1 MiB entries: 64 MiB of them");
  assert.equal(catchUpMargin(config, 0, 0), 5_000, "nothing measured yet");
});

test("a node snapshots and compacts once snapshotLogBytes of entries were applied, long before snapshotEntries", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-bytes-"));
  const nodes: FerryNode[] = [];
  try {
    // 40 KiB of log per snapshot; 4 KiB bodies: a snapshot every ~10 entries, never by count.
    await startInProcessCluster(root, nodes, { snapshotEntries: 1_000_000, snapshotLogBytes: 40 * 1024, snapshotCatchUpEntries: 1_000 });
    await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const body = new Uint8Array(4096).fill(7);
    for (let i = 0; i < 60; i++) await leader.execute({ op: "send", recipients: ["bytes"], body }, session);
    for (const node of nodes) {
      const inner = node as unknown as NodeInternals;
      await waitFor("a snapshot by bytes, and the log compacted below it", () => inner.lastSnapshotIndex > 0 && inner.storage.firstIndex() > 1);
      // The margin: at most a quarter of 40 KiB of ~4 KiB entries stays below the snapshot.
      assert.ok(inner.lastSnapshotIndex - inner.storage.firstIndex() <= 3, `kept ${inner.lastSnapshotIndex - inner.storage.firstIndex()} entries below the snapshot`);
    }
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});
