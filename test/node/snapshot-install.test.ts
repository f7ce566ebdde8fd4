// A wiped follower catches up from a snapshot larger than a transport chunk: the snapshot is
// written to its file as it arrives (DiskRaftStorage.receiveSnapshot, never whole in memory), the
// state is restored from that file piece by piece, and after a restart the node starts from it.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { ListReply } from "../../src/protocol/api.js";
import { FerryNode } from "../../src/node/node.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "snapshot-install-test" };
const BODY_BYTES = 16 * 1024;
const MESSAGES = 48; // ~770 KiB of bodies: a snapshot of several 256 KiB transport chunks

interface NodeInternals {
  snapshotThread: { started(): Promise<boolean> } | undefined;
  storage: {
    firstIndex(): number;
    snapshot(): { meta: { index: number }; dataBytes: number };
    receiveSnapshot: (...args: unknown[]) => Promise<unknown>;
  };
}

async function listed(node: FerryNode, mailbox: string): Promise<string[]> {
  const reply = (await node.execute({ op: "list", mailbox, limit: 1000, stale: true }, session)) as ListReply;
  assert.equal(reply.ok, true);
  return reply.items.map((item) => `${item.id} ${item.bytes} ${item.state}`);
}

// A snapshot due before the thread is up is made on the event loop: wait for it.
async function leaderThreadUp(leader: FerryNode, nice: number): Promise<void> {
  const thread = (leader as unknown as NodeInternals).snapshotThread;
  assert.equal(thread !== undefined, nice >= 0);
  await thread?.started();
}

// Made by each node's snapshot thread (the default), and on the event loop (snapshotThreadNice -1).
for (const snapshotThreadNice of [19, -1]) {
  test(`a wiped follower catches up from a streamed snapshot written to its file, and restarts from it (snapshotThreadNice ${snapshotThreadNice})`, { timeout: 90_000 }, async () => {
    const root = await mkdtemp(join(tmpdir(), "ferry-snapshot-install-"));
    const nodes: FerryNode[] = [];
    try {
      await startInProcessCluster(root, nodes, { snapshotEntries: 20, snapshotCatchUpEntries: 5, snapshotThreadNice });
      await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
      const leader = nodes.find((node) => node.raftState().isLeader)!;
      const victim = nodes.find((node) => node !== leader)!;
      const config = victim.config;
      await leaderThreadUp(leader, snapshotThreadNice);
      await victim.stop();
      await rm(config.dataDir, { recursive: true, force: true });

      for (let i = 0; i < MESSAGES; i++) {
        const body = new Uint8Array(BODY_BYTES).fill(97 + (i % 26));
        body.set(new TextEncoder().encode(`message-${String(i).padStart(4, "0")}`));
        const reply = await leader.execute({ op: "send", recipients: ["big"], body }, session);
        assert.equal(reply.ok, true);
      }
      const leaderInner = leader as unknown as NodeInternals;
      // Its first snapshot (at ~20 entries) may hold under 2 chunks' worth: wait for a later one.
      await waitFor("the leader compacts its log", () => leaderInner.storage.firstIndex() > 1, 20_000);
      await waitFor("a leader's snapshot spans several 256 KiB chunks", () => leaderInner.storage.snapshot().dataBytes > 2 * 256 * 1024, 20_000);
      const byThread = (await leader.metrics.snapshotThreadReads.get()).values.find((value) => value.labels.result === "opened")?.value ?? 0;
      assert.equal(byThread > 0, snapshotThreadNice >= 0, `${byThread} snapshots read by the snapshot thread`);

      const wiped = await FerryNode.start(config);
      nodes.splice(nodes.indexOf(victim), 1, wiped);
      const inner = wiped as unknown as NodeInternals;
      let receivedToFile = 0;
      const receiveSnapshot = inner.storage.receiveSnapshot;
      inner.storage.receiveSnapshot = function (this: unknown, ...args: unknown[]) {
        receivedToFile++;
        return receiveSnapshot.apply(this, args);
      };
      await waitFor("the wiped node catches up", () => wiped.raftState().applied >= leader.raftState().applied, 30_000);
      assert.ok(receivedToFile >= 1, "the snapshot went to a file as it arrived");
      const expected = await listed(leader, "big");
      assert.equal(expected.length, MESSAGES);
      assert.deepEqual(await listed(wiped, "big"), expected, "the restored state is the leader's");

      // Restarted, the node starts from the snapshot file it received (and the log after it).
      await wiped.stop();
      const restarted = await FerryNode.start(config);
      nodes.splice(nodes.indexOf(wiped), 1, restarted);
      await waitFor("the restarted node applies again", () => restarted.raftState().applied >= leader.raftState().applied, 30_000);
      assert.deepEqual(await listed(restarted, "big"), expected);
    } finally {
      await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
      await rm(root, { recursive: true, force: true });
    }
  });
}
