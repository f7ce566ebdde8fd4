// Graceful shutdown and restarts of real processes: SIGTERM to the leader under a steady client
// load (it exits 0, leadership moves, the clients carry on, nothing acknowledged is lost or
// stored twice); a follower killed with SIGKILL and restarted catches up.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { sleep, TestCluster, textRequest } from "./harness.js";
import { drain, selfStatus, waitFor } from "./tools.js";

describe("shutdown and restart of real processes", { timeout: 180_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;

  before(async () => {
    cluster = await new TestCluster({ nodes: 3 }).start();
    client = await connect({ seeds: cluster.seeds(), name: "shutdown" });
  });
  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("SIGTERM to the leader under load: exit 0, leadership moves, no client error, nothing lost or duplicated", async () => {
    const leader = await cluster.waitForLeader();
    const child = cluster.nodes.get(leader)!.child!;
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const acknowledged: string[] = [];
    let stopAt = Number.POSITIVE_INFINITY;
    // Four producers, each sending one message at a time with its own ids, until 30 more sends
    // succeed after the leader has exited. Any error thrown fails the test.
    const producers = [0, 1, 2, 3].map(async (producer) => {
      for (let i = 0; acknowledged.length < stopAt; i++) {
        const id = `term-${producer}-${i}`;
        const reply = await client.send("shutdown-load", id, { id, timeoutMs: 30_000 });
        assert.equal(reply.id, id);
        acknowledged.push(id);
      }
    });
    while (acknowledged.length < 40) await sleep(10);
    child.kill("SIGTERM");
    assert.equal(await exited, 0, `the leader exits 0 on SIGTERM\n${cluster.dump()}`);
    stopAt = acknowledged.length + 30;
    await Promise.all(producers);
    const newLeader = await cluster.waitForLeader();
    assert.notEqual(newLeader, leader);
    assert.match(cluster.nodes.get(leader)!.output.join(""), /\bstopped\b/);

    const { ids } = await drain(client, "shutdown-load");
    assert.equal(new Set(ids).size, ids.length, "no message is stored or delivered twice");
    const delivered = new Set(ids);
    for (const id of acknowledged) assert.ok(delivered.has(id), `acknowledged ${id} was lost`);
    for (const id of ids) assert.match(id, /^term-\d-\d+$/, "nothing unexpected was stored");

    cluster.spawn(leader);
    await cluster.waitAllKnowLeader();
  });

  test("a follower killed with SIGKILL and restarted catches up: its linearizable LIST shows everything", async () => {
    const leader = await cluster.waitForLeader();
    const victim = [...cluster.nodes.keys()].find((id) => id !== leader)!;
    for (let i = 0; i < 50; i++) await client.send("catch-up", `before-${i}`, { id: `before-${i}` });
    await cluster.kill(victim, "SIGKILL");
    await Promise.all(Array.from({ length: 150 }, (_, i) => client.send("catch-up", `while-${i}`, { id: `while-${i}` })));
    cluster.spawn(victim);
    const address = cluster.nodes.get(victim)!.client;
    const items = await waitFor(
      "the restarted follower to list all 200 messages",
      async () => {
        const lines = await textRequest(address, "LIST catch-up 1000").catch(() => [] as string[]);
        const found = lines.filter((line) => line.startsWith("ITEM "));
        return found.length === 200 ? found : undefined;
      },
      30_000,
      () => cluster.dump(),
    );
    const ids = items.map((line) => line.split(" ")[1]!);
    assert.deepEqual(ids.slice(0, 50), Array.from({ length: 50 }, (_, i) => `before-${i}`), "log order is kept");
    assert.equal(new Set(ids).size, 200);
    const self = await selfStatus(address);
    assert.equal(self?.role, "follower");
    assert.equal(self?.healthy, true);
  });
});
