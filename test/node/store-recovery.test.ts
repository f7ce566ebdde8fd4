// A commit the state store refuses (lmdb-js 3.5's freelist check: "freelist entry N had
// bad/duplicate entries", which stopped both followers of a benchmark cluster at once) does not
// stop the node: the store falls back to its last commit, and the node reloads the broker and
// re-applies the lost entries from its WAL (FerryNode.recoverStore).
//
// Three FerryNodes run in this process on loopback. The fault is planted in LmdbKv's commit
// (its commitFault option, reached at run time), which then aborts the group through lmdb-js as a
// refused commit does. Both ways a failure is met are covered: by an apply that closes a full
// group, and by the group timer's commit while the node is idle.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { FerryNode } from "../../src/node/node.js";
import type { ListReply, ReceiveReply, Reply } from "../../src/protocol/api.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "store-recovery-test" };
const MAILBOX = "recovery";

interface NodeInternals {
  kv: { commitFault: (() => Error | undefined) | undefined; failed: boolean; transaction(fn: () => void): void; commit(): void };
  broker: { appliedIndex(): number };
  metrics: { storeRecoveries: { get(): Promise<{ values: Array<{ value: number }> }> } };
}

function internals(node: FerryNode): NodeInternals {
  return node as unknown as NodeInternals;
}

// Fails the next `count` commits of the node's state store.
function plantFaults(node: FerryNode, count: number): () => number {
  let left = count;
  internals(node).kv.commitFault = () => {
    if (left <= 0) return undefined;
    left--;
    return new Error("planted: freelist entry 14 had bad/duplicate entries");
  };
  return () => count - left;
}

async function recoveries(node: FerryNode): Promise<number> {
  return (await internals(node).metrics.storeRecoveries.get()).values[0]?.value ?? 0;
}

function items(reply: Reply): Array<[string, string, number]> {
  const list = reply as ListReply;
  return list.items.map((item) => [item.id, item.state, item.deliveries]);
}

test("a node whose state store refuses commits keeps serving, and its state is what the log says", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-store-recovery-"));
  const nodes: FerryNode[] = [];
  const fatal: Error[] = [];
  try {
    // Commits every 20 ms, so the timer's commits fail while idle too.
    await startInProcessCluster(root, nodes, { stateCommitMs: 20, requestTimeoutMs: 5_000 });
    for (const node of nodes) node.onFatal((error) => fatal.push(error));
    await waitFor("a leader", () => nodes.some((node) => node.raftState().isLeader), 10_000);
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const followers = nodes.filter((node) => node !== leader);
    const send = (body: string) => leader.execute({ op: "send", recipients: [MAILBOX], body: new TextEncoder().encode(body) }, session);

    // Under load: a follower's and the leader's commits fail (two each, in a row).
    const faultsOnFollower = plantFaults(followers[0]!, 2);
    const faultsOnLeader = plantFaults(leader, 2);
    const sent: string[] = [];
    for (let round = 0; round < 20; round++) {
      const replies = await Promise.all(Array.from({ length: 25 }, (_, i) => send(`m${round}-${i}`)));
      for (const reply of replies) sent.push((reply as { id: string }).id);
    }
    const received = (await leader.execute({ op: "receive", mailbox: MAILBOX, max: 100 }, session)) as ReceiveReply;
    assert.equal(received.messages.length, 100);
    await leader.execute({ op: "ack", mailbox: MAILBOX, ids: received.messages.slice(0, 60).map((message) => message.id) }, session);
    await waitFor("the planted faults were met", () => faultsOnFollower() === 2 && faultsOnLeader() === 2, 10_000);

    // Idle: the next commit is the timer's, after one more SEND.
    const faultsIdle = plantFaults(followers[1]!, 1);
    sent.push(((await send("idle")) as { id: string }).id);
    await waitFor("the idle follower's timer commit failed", () => faultsIdle() === 1, 10_000);
    await waitFor("its store recovered", () => !internals(followers[1]!).kv.failed, 10_000);

    assert.deepEqual(fatal, [], "no node failed");
    assert.deepEqual(await Promise.all(nodes.map(recoveries)), nodes.map((node) => (node === leader || node === followers[0] ? 2 : 1)));
    // Every node's own state (a stale LIST serves it without a round trip) is the same, and has
    // every message: 60 acked, 40 leased, the rest ready.
    const lastIndex = internals(leader).broker.appliedIndex();
    await waitFor("every node applied the log", () => nodes.every((node) => internals(node).broker.appliedIndex() >= lastIndex), 10_000);
    const lists = await Promise.all(nodes.map((node) => node.execute({ op: "list", mailbox: MAILBOX, limit: 1000, stale: true }, session)));
    const expected = sent.slice(60).map((id, position): [string, string, number] => (position < 40 ? [id, "leased", 1] : [id, "ready", 0]));
    for (const list of lists) assert.deepEqual(items(list), expected);
    // And they keep working.
    assert.ok("id" in (await send("after")));
    const afterIndex = internals(leader).broker.appliedIndex();
    await waitFor("every node applied the last SEND", () => nodes.every((node) => internals(node).broker.appliedIndex() >= afterIndex), 10_000);

    // A LIST that meets the refused store before the recovery (which runs at the end of the turn)
    // is told to retry.
    const probe = followers[1]!;
    plantFaults(probe, 1);
    internals(probe).kv.transaction(() => {});
    assert.throws(() => internals(probe).kv.commit(), /could not commit/);
    await assert.rejects(probe.execute({ op: "list", mailbox: MAILBOX, stale: true }, session), (error: unknown) => (error as { code?: string }).code === "UNHEALTHY");
    await waitFor("the probe's store recovered", () => !internals(probe).kv.failed, 10_000);
    assert.equal(items(await probe.execute({ op: "list", mailbox: MAILBOX, limit: 1000, stale: true }, session)).length, expected.length + 1);
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});

test("a node stops when its store refuses more commits in a minute than stateRecoveriesMax", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-store-recovery-"));
  const nodes: FerryNode[] = [];
  try {
    await startInProcessCluster(root, nodes, { stateCommitMs: 20, stateRecoveriesMax: 2 });
    await waitFor("a leader", () => nodes.some((node) => node.raftState().isLeader), 10_000);
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const follower = nodes.find((node) => node !== leader)!;
    const fatal: Error[] = [];
    follower.onFatal((error) => fatal.push(error));
    plantFaults(follower, 1_000);
    for (let i = 0; i < 10 && fatal.length === 0; i++) {
      await leader.execute({ op: "send", recipients: [MAILBOX], body: new TextEncoder().encode(`m${i}`) }, session);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await waitFor("the follower failed", () => fatal.length > 0, 10_000);
    assert.match(fatal[0]!.message, /state store could not commit: planted/);
    assert.equal(await recoveries(follower), 2);
    // The other two go on.
    assert.ok("id" in (await leader.execute({ op: "send", recipients: [MAILBOX], body: new TextEncoder().encode("still") }, session)));
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});
