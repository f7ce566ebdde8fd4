// A restarted node that leads again stamps entries from its clock, not from a high-water mark
// reserved seconds ahead of it (which shifted every lease, delay and TTL by as much, unfenced).
// Its clock is disciplined within clockMaxOffsetMs (250 ms) of the cluster, so are its stamps.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { TestCluster } from "./harness.js";
import { selfStatus, waitFor } from "./tools.js";

describe("timestamps after a restart", { timeout: 120_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;
  before(async () => {
    cluster = await new TestCluster({ nodes: 3 }).start();
    client = await connect({ seeds: cluster.seeds() });
  });
  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("a restarted node, once leader, stamps within clockMaxOffsetMs of the wall clock", async () => {
    const aheadMs = async () => Number((await client.send("stamps", "x")).timestamp >> 16n) - Date.now();
    assert.ok(Math.abs(await aheadMs()) < 250);
    const leader = await cluster.waitForLeader();
    await cluster.kill(leader);
    cluster.spawn(leader);
    await cluster.waitAllKnowLeader();
    const address = cluster.nodes.get(leader)!.client;
    await waitFor("the restarted node to lead again", async () => {
      await client.cluster("transfer", leader, {}, { timeoutMs: 5_000 }).catch(() => undefined);
      return (await selfStatus(address))?.role === "leader";
    });
    const ahead = await aheadMs();
    assert.ok(Math.abs(ahead) < 250, `the new entry is stamped ${ahead} ms ahead of the wall clock`);
  });
});
