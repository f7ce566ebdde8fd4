// PENDING (fails today; not part of the suite, which runs *.test.ts only):
//   node --import tsx --test test/e2e/pending-restart-timestamps.ts
// A restarted node's HLC starts at its persisted high-water mark (<data>/clock.json), which
// src/clock reserves up to 10 s ahead of the clock. When that node leads, every entry it stamps
// is seconds in the future, with no fencing (its clock is fine; only its HLC is ahead), and every
// time-based decision taken from entry stamps (lease expiry, delays, TTL, the dedupe window)
// shifts by as much. The contract wants timestamps to follow the disciplined clock, which the
// skew guard keeps within clockMaxOffsetMs (250 ms) of the cluster.
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
