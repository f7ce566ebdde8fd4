// A follower that is still reading its own snapshot when it installs one from the leader drops
// its own: that snapshot is stale, and its index lies below the log the installed one left, so
// saving it failed ("saveSnapshot at N: outside the log") and the failure was fatal (found by the
// long chaos run, seed 1753365461; cf31c80).
//
// Three FerryNodes run in this process on loopback, taking a snapshot every 20 entries. The
// follower's snapshot read (and write) is held at its start. The leader stops sending to that follower,
// writes and compacts far past it, then reaches it again: the log the follower needs is gone, so
// the leader sends a snapshot, which the follower installs. Then the held read goes on.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { FerryNode } from "../../src/node/node.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "snapshot-race-test" };

interface NodeInternals {
  writeSnapshotData(source: unknown, writer: unknown): Promise<boolean>;
  transport: { setPeers(peers: Map<number, string>): void };
  storage: { firstIndex(): number };
  snapshotting: boolean;
}

test("a follower drops the snapshot it is making when it installs one from the leader, and goes on", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-race-"));
  const nodes: FerryNode[] = [];
  try {
    const members = await startInProcessCluster(root, nodes, { snapshotEntries: 20, snapshotCatchUpEntries: 5 });
    await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const follower = nodes.find((node) => node !== leader)!;
    const fatal: Error[] = [];
    follower.onFatal((error) => fatal.push(error));
    const inner = follower as unknown as NodeInternals;

    // Hold the follower's next snapshot read at its start.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let readStarted = false;
    const writeSnapshotData = inner.writeSnapshotData;
    inner.writeSnapshotData = async function (this: NodeInternals, source, writer) {
      readStarted = true;
      await held;
      return writeSnapshotData.call(this, source, writer);
    };
    const send = async (count: number, tag: string) => {
      for (let i = 0; i < count; i++) await leader.execute({ op: "send", recipients: ["race"], body: new TextEncoder().encode(`${tag}-${i}`) }, session);
    };
    await send(30, "before");
    await waitFor("the follower starts a snapshot (held)", () => readStarted);
    const heldAt = follower.raftState().applied;

    // The leader stops sending to the follower, then writes and compacts far past it.
    const leaderInner = leader as unknown as NodeInternals;
    const followerId = follower.status().self;
    const others = new Map(members.filter((m) => m.id !== followerId && m.id !== leader.status().self).map((m) => [m.id, m.peer]));
    leaderInner.transport.setPeers(others);
    await send(120, "apart");
    await waitFor("the leader compacts past the follower", () => leaderInner.storage.firstIndex() > heldAt + 1);
    leaderInner.transport.setPeers(new Map(members.filter((m) => m.id !== leader.status().self).map((m) => [m.id, m.peer])));
    await waitFor("the follower installs the leader's snapshot", () => inner.storage.firstIndex() > heldAt + 1, 20_000);

    release(); // the held read goes on, now stale
    await waitFor("the stale snapshot is given up", () => !inner.snapshotting);
    assert.deepEqual(fatal, []);
    await send(30, "after");
    await waitFor("the follower applies what follows", () => follower.raftState().applied >= leader.raftState().applied);
    assert.deepEqual(fatal, []);
  } finally {
    await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
    await rm(root, { recursive: true, force: true });
  }
});
