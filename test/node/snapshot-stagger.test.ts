// The members of a cluster started together take their first snapshot at different indexes
// (snapshotStagger), so they do not all read and write their whole state at the same moment; the
// distance stays, since each later snapshot counts snapshotEntries from the node's last one.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type FerryNode, snapshotStagger } from "../../src/node/node.js";
import { SnapshotUnavailableError } from "../../src/raft/types.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "snapshot-stagger-test" };
const SNAPSHOT_ENTRIES = 40;

interface NodeInternals {
  storage: { snapshot(): { meta: { index: number } } };
}

test("snapshotStagger: 0, 1/8, 2/8, 3/8 of snapshotEntries by node id, repeating every 4 ids", () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 7].map((id) => snapshotStagger(id, 20_000)),
    [0, 2500, 5000, 7500, 0, 5000],
  );
  assert.equal(snapshotStagger(3, 7), 1); // floor(2 * 7 / 8)
  for (let id = 1; id <= 64; id++) assert.ok(snapshotStagger(id, 1000) < 1000 / 2, "always under half the interval");
});

test("three nodes started together take their first snapshots at different indexes", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-stagger-"));
  const nodes: FerryNode[] = [];
  try {
    await startInProcessCluster(root, nodes, { snapshotEntries: SNAPSHOT_ENTRIES, snapshotCatchUpEntries: 5 });
    await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    // One entry per SEND (one in flight): past node 3's first snapshot (40 + 10), short of anyone's
    // second (80).
    for (let i = 0; i < 60; i++) {
      const reply = await leader.execute({ op: "send", recipients: ["stagger"], body: new TextEncoder().encode(`m${i}`) }, session);
      assert.equal(reply.ok, true);
    }
    // 0 until the node has one (the storage throws SnapshotUnavailableError until then).
    const snapshotIndex = (node: FerryNode) => {
      try {
        return (node as unknown as NodeInternals).storage.snapshot().meta.index;
      } catch (error) {
        if (error instanceof SnapshotUnavailableError) return 0;
        throw error;
      }
    };
    await waitFor("every node has snapshotted", () => nodes.every((node) => snapshotIndex(node) > 0), 20_000);
    const byId = new Map(nodes.map((node) => [node.config.id, snapshotIndex(node)]));
    for (const [id, index] of byId) {
      const due = SNAPSHOT_ENTRIES + snapshotStagger(id, SNAPSHOT_ENTRIES);
      assert.ok(index >= due && index < 2 * SNAPSHOT_ENTRIES, `node ${id} snapshotted at ${index}, due at ${due}`);
    }
    assert.ok(byId.get(1)! < byId.get(3)!, `node 1 at ${byId.get(1)}, node 3 at ${byId.get(3)}: not the same point`);
  } finally {
    await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
    await rm(root, { recursive: true, force: true });
  }
});
