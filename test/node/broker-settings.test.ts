// A node's broker settings (NodeConfig.broker, the config file's `broker` key): its limits are the
// ones the broker enforces, and a node whose settings differ from its peers' is kept out of the
// cluster (it would apply the same entries to a different state).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { LogLevel } from "../../src/node/log.js";
import type { FerryNode } from "../../src/node/node.js";
import { waitFor } from "../e2e/tools.js";
import { startInProcessCluster } from "./in-process.js";

const session = { identity: "broker-settings-test" };

test("a cluster's broker settings are the limits its nodes enforce", { timeout: 30_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-broker-settings-"));
  const nodes: FerryNode[] = [];
  try {
    await startInProcessCluster(root, nodes, { broker: { bodyBytesMax: 100, mailbox: { deliveriesMax: 2 } } });
    await waitFor("a leader", () => nodes.find((node) => node.raftState().isLeader));
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    const tooLarge = await leader.execute({ op: "send", recipients: ["limited"], body: new Uint8Array(101) }, session).catch((error: unknown) => error);
    assert.match(String((tooLarge as { code?: string }).code ?? JSON.stringify(tooLarge)), /TOO_LARGE/);
    const sent = await leader.execute({ op: "send", recipients: ["limited"], body: new Uint8Array(100) }, session);
    assert.equal((sent as { ok: boolean }).ok, true);
    const config = await leader.execute({ op: "config", mailbox: "limited", settings: {} }, session);
    assert.equal((config as { config: { deliveriesMax: number } }).config.deliveriesMax, 2, "the mailbox defaults come from the settings");
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});

test("a node whose broker settings differ is refused by its peers, with both values logged as an error; the others form the cluster", { timeout: 30_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-broker-settings-"));
  const nodes: FerryNode[] = [];
  const errors: Array<{ id: number; event: string; fields: Record<string, unknown> }> = [];
  try {
    await startInProcessCluster(
      root,
      nodes,
      // Node 3 was given another body limit; a different fresh-heads cache size is fine.
      (id) => ({ broker: id === 3 ? { bodyBytesMax: 4096 } : { freshHeadsInMemoryMax: id * 1000 } }),
      (id) => ({
        log: (level: LogLevel, event: string, fields: Record<string, unknown> = {}) => {
          if (level === "error") errors.push({ id, event, fields });
        },
      }),
    );
    await waitFor("nodes 1 and 2 elect a leader", () => nodes.slice(0, 2).find((node) => node.raftState().isLeader));
    await waitFor("every node logged the mismatch", () => [1, 2, 3].every((id) => errors.some((error) => error.id === id && error.event === "peer-settings-refused")));
    const onThree = errors.find((error) => error.id === 3)!;
    assert.match(String(onThree.fields.reason), /broker settings differ \(every node must use the same\): bodyBytesMax 4096 here, 1048576 there$/);
    const leader = nodes.find((node) => node.raftState().isLeader)!;
    assert.notEqual(leader, nodes[2], "node 3 never leads");
    const sent = await leader.execute({ op: "send", recipients: ["inbox"], body: new Uint8Array(10) }, session);
    assert.equal((sent as { ok: boolean }).ok, true, "nodes 1 and 2 are a majority and serve");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(nodes[2]!.raftState().isLeader, false);
    assert.ok(nodes[2]!.raftState().lastIndex < leader.raftState().commit, "node 3 has none of the cluster's entries");
  } finally {
    await Promise.allSettled(nodes.map((node) => node.stop()));
    await rm(root, { recursive: true, force: true });
  }
});
