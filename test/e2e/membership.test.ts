// Membership changes on a running cluster of real processes: a fourth node joins (`--join`, then
// `ferry cluster add`), becomes a voter and serves linearizable reads of everything; a follower
// and then the leader are removed and the cluster keeps serving; `ferry cluster transfer` moves
// leadership.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { TestCluster, textRequest } from "./harness.js";
import { drain, ferry, statusOf, waitFor } from "./tools.js";

describe("membership changes on a running cluster", { timeout: 180_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;
  const sent: string[] = [];

  const sendBatch = async (prefix: string, count: number) => {
    for (let i = 0; i < count; i++) {
      const id = `${prefix}-${i}`;
      await client.send("members", id, { id });
      sent.push(id);
    }
  };
  const liveSeeds = () => [...cluster.nodes.values()].filter((node) => node.child).map((node) => node.client);
  // The ids every live node lists as voters (role leader or follower), once they all agree.
  const votersEverywhere = async (): Promise<number[] | undefined> => {
    const views = await Promise.all(liveSeeds().map((address) => statusOf(address)));
    if (views.some((view) => view === undefined)) return undefined;
    const keys = views.map((view) =>
      view!
        .filter((node) => node.role === "leader" || node.role === "follower")
        .map((node) => node.id)
        .sort()
        .join(","),
    );
    return keys.every((key) => key === keys[0]) ? keys[0]!.split(",").map(Number) : undefined;
  };

  before(async () => {
    cluster = await new TestCluster({ nodes: 3 }).start();
    client = await connect({ seeds: cluster.seeds(), name: "members" });
  });
  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("a fourth node joins with `ferry cluster add`, becomes a voter and serves linearizable LIST", async () => {
    await sendBatch("early", 60);
    const fourth = await cluster.define(4);
    cluster.spawn(4, ["--join"]);
    const added = await ferry(["cluster", "add", "4", "--peer", fourth.peer, "--client", fourth.client, "--seeds", cluster.seeds().slice(0, 3).join(","), "--timeout", "60000"]);
    assert.equal(added.code, 0, `${added.stderr}\n${cluster.dump()}`);
    assert.match(added.stdout, /node 4 added as a voter/);
    await sendBatch("later", 20);
    const voters = await waitFor("all four nodes to agree on four voters", async () => {
      const ids = await votersEverywhere();
      return ids?.length === 4 ? ids : undefined;
    });
    assert.deepEqual(voters, [1, 2, 3, 4]);
    const lines = await textRequest(fourth.client, "LIST members 1000");
    assert.deepEqual(
      lines.filter((line) => line.startsWith("ITEM ")).map((line) => line.split(" ")[1]),
      sent,
      "the new node lists every message, in order",
    );
  });

  test("removing a follower, then the leader, leaves a cluster that keeps serving", async () => {
    await client.close();
    client = await connect({ seeds: cluster.seeds(), name: "members" });
    let leader = await cluster.waitForLeader();
    const follower = [...cluster.nodes.keys()].find((id) => id !== leader && id !== 4)!;
    const removed = await client.cluster("remove", follower, {}, { timeoutMs: 30_000 });
    assert.match(removed.message, new RegExp(`node ${follower} removed`));
    await cluster.kill(follower);
    await sendBatch("after-follower", 10);
    assert.equal((await waitFor("three voters everywhere", async () => ((await votersEverywhere())?.length === 3 ? true : undefined))), true);

    leader = await cluster.waitForLeader();
    const removedLeader = await client.cluster("remove", leader, {}, { timeoutMs: 30_000 });
    assert.match(removedLeader.message, new RegExp(`node ${leader} removed`));
    await cluster.kill(leader);
    await sendBatch("after-leader", 10);
    const newLeader = await cluster.waitForLeader();
    assert.notEqual(newLeader, leader);
    const voters = await waitFor("two voters everywhere", async () => {
      const ids = await votersEverywhere();
      return ids?.length === 2 ? ids : undefined;
    });
    assert.ok(!voters.includes(leader) && !voters.includes(follower), `voters ${voters}`);
  });

  test("`ferry cluster transfer <id>` hands leadership to that node", async () => {
    const leader = await cluster.waitForLeader();
    const target = [...cluster.nodes.values()].find((node) => node.child && node.id !== leader)!;
    const transfer = await ferry(["cluster", "transfer", String(target.id), "--seeds", liveSeeds().join(",")]);
    assert.equal(transfer.code, 0, transfer.stderr);
    assert.match(transfer.stdout, new RegExp(`transferred to node ${target.id}`));
    await waitFor("the target to lead", async () => (await statusOf(target.client))?.find((node) => node.self)?.role === "leader");
    await sendBatch("after-transfer", 10);
    const { ids } = await drain(client, "members");
    assert.deepEqual(ids, sent, "every message, once, in order");
  });
});
