// A clock jump on a running node (FERRY_CLOCK_FILE, re-read every second by src/node/time.ts):
// the leader's clock jumps +5 s; it fences itself (unhealthy in its own STATUS) and leadership
// moves away; the cluster keeps serving and message timestamps stay strictly increasing in log
// order; once the jump is undone the node is healthy again and can lead. Then two clocks at once:
// a fenced leader hands over to the node whose clock agrees, never to a fenced one.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { sleep, TestCluster } from "./harness.js";
import { drain, selfStatus, statusOf, waitFor } from "./tools.js";

describe("a clock jump on a running node", { timeout: 180_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;
  const clockFile = (id: number) => join(cluster.root, `clock-offset-${id}`);

  before(async () => {
    cluster = new TestCluster({ nodes: 3, nodeEnv: (id) => ({ FERRY_CLOCK_FILE: clockFile(id) }) });
    for (const id of [1, 2, 3]) writeFileSync(join(cluster.root, `clock-offset-${id}`), "0");
    await cluster.start();
    client = await connect({ seeds: cluster.seeds(), name: "clock" });
  });
  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("the leader jumps +5 s: fenced, leadership moves, serving continues, timestamps monotonic; healthy and leading again after", async () => {
    const acknowledged: Array<{ id: string; timestamp: bigint }> = [];
    let producing = true;
    const producer = (async () => {
      for (let i = 0; producing; i++) {
        const id = `tick-${i}`;
        const reply = await client.send("clock", id, { id, timeoutMs: 30_000 });
        acknowledged.push({ id, timestamp: reply.timestamp });
        await sleep(20);
      }
    })();
    const produced = () => acknowledged.length;
    const jumped = await cluster.waitForLeader();
    const jumpedAddress = cluster.nodes.get(jumped)!.client;
    const other = [...cluster.nodes.values()].find((node) => node.id !== jumped)!;
    while (produced() < 20) await sleep(10);

    writeFileSync(clockFile(jumped), "5000");
    await waitFor("the jumped node to fence itself", async () => (await selfStatus(jumpedAddress))?.healthy === false, 20_000, () => cluster.dump());
    const newLeader = await waitFor(
      "leadership to move away from the fenced node",
      async () => {
        const view = await selfStatus(other.client);
        return view && view.leader !== 0 && view.leader !== jumped ? view.leader : undefined;
      },
      20_000,
      () => cluster.dump(),
    );
    assert.notEqual(newLeader, jumped);
    const beforeHeal = produced();
    await waitFor("sends to go on under the new leader", () => produced() >= beforeHeal + 20, 20_000);

    writeFileSync(clockFile(jumped), "0");
    await waitFor("the node to be healthy again", async () => (await selfStatus(jumpedAddress))?.healthy === true, 40_000, () => cluster.dump());
    // Hand leadership back to it; the first attempts may race its rejoin, so retry.
    await waitFor(
      "the healed node to accept leadership",
      async () => {
        await client.cluster("transfer", jumped, {}, { timeoutMs: 5_000 }).catch(() => undefined);
        return (await selfStatus(jumpedAddress))?.role === "leader";
      },
      30_000,
      () => cluster.dump(),
    );
    const afterTransfer = produced();
    await waitFor("sends to go on under the healed leader", () => produced() >= afterTransfer + 10, 20_000);
    producing = false;
    await producer;

    for (let i = 1; i < acknowledged.length; i++) {
      assert.ok(acknowledged[i]!.timestamp > acknowledged[i - 1]!.timestamp, `timestamps of sequential sends increase (${acknowledged[i - 1]!.id} -> ${acknowledged[i]!.id})`);
    }
    const listed = (await client.list("clock", { limit: 1000 })).items;
    assert.deepEqual(
      listed.map((item) => item.id),
      acknowledged.map((a) => a.id),
      "log order is send order",
    );
    for (let i = 1; i < listed.length; i++) assert.ok(listed[i]!.timestamp > listed[i - 1]!.timestamp, "timestamps strictly increase in log order");
    const { ids } = await drain(client, "clock");
    assert.deepEqual(ids, acknowledged.map((a) => a.id), "delivered once each, in timestamp order");
    const statuses = await Promise.all(cluster.seeds().map((address) => statusOf(address)));
    for (const status of statuses) assert.ok(status?.find((node) => node.self)?.healthy, "every node healthy at the end");
  });

  // Two clocks off at once: the leader's (+5 s) and the follower's that comes first among the
  // voters (-5 s). Both are fenced; the leader must hand over to the one node whose clock agrees
  // with the cluster. Choosing by progress alone, it picked the fenced follower (tied on progress,
  // first in order), which never campaigns: the leader kept the leadership and dropped writes
  // while each transfer was pending.
  test("a fenced leader hands over to the node whose clock agrees, not to a fenced one", async () => {
    const leader = await cluster.waitForLeader();
    const followers = [...cluster.nodes.keys()].filter((id) => id !== leader).sort((a, b) => a - b);
    const [fencedFollower, healthy] = [followers[0]!, followers[1]!];
    await client.send("clock-2", "before"); // no traffic after it: both followers are equally caught up
    // The follower first, so that it is fenced (for the 5 s rejoin period) before the leader is.
    for (const [id, offsetMs] of [
      [fencedFollower, "-5000"],
      [leader, "5000"],
    ] as const) {
      writeFileSync(clockFile(id), offsetMs);
      const address = cluster.nodes.get(id)!.client;
      await waitFor(`node ${id} to fence itself`, async () => (await selfStatus(address))?.healthy === false, 20_000, () => cluster.dump());
    }
    const healthyAddress = cluster.nodes.get(healthy)!.client;
    await waitFor(
      `leadership to move to node ${healthy}, the only one whose clock agrees`,
      async () => (await selfStatus(healthyAddress))?.role === "leader",
      20_000,
      () => cluster.dump(),
    );
    const reply = await client.send("clock-2", "after", { timeoutMs: 10_000 });
    assert.equal(reply.duplicate, false);
    for (const id of [leader, fencedFollower]) writeFileSync(clockFile(id), "0");
    for (const address of cluster.seeds()) {
      await waitFor(`${address} to be healthy again`, async () => (await selfStatus(address))?.healthy === true, 40_000, () => cluster.dump());
    }
  });
});
