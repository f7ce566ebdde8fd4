// End to end, with real processes: a 3-node cluster used through the text protocol (as a person
// with nc would) and through the client library; a leader killed with SIGKILL under load; a
// follower restarted; a wiped node back through a snapshot.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { sleep, TestCluster, textRequest } from "./harness.js";

describe("a 3-node cluster of real processes", { timeout: 180_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;

  before(async () => {
    cluster = await new TestCluster({ nodes: 3, extraArgs: ["--snapshot-entries", "200", "--snapshot-catch-up-entries", "20"] }).start();
    client = await connect({ seeds: cluster.seeds(), name: "e2e" });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("the text protocol works on every node, as typed into nc", async () => {
    for (const node of cluster.nodes.values()) {
      const mailbox = `text-${node.id}`;
      const sent = await textRequest(node.client, `SEND ${mailbox} hello\\nworld`);
      assert.match(sent[0]!, /^OK \S+$/);
      const id = sent[0]!.slice(3);
      const listed = await textRequest(node.client, `LIST ${mailbox}`);
      assert.equal(listed.length, 2);
      assert.match(listed[0]!, new RegExp(`^ITEM ${id} anonymous \\d+ ready 0 11$`));
      const received = await textRequest(node.client, `RECEIVE ${mailbox} 10`);
      assert.deepEqual(received.length, 2, received.join("|"));
      assert.match(received[0]!, new RegExp(`^MSG ${id} anonymous \\d+ 1 hello\\\\nworld$`));
      assert.deepEqual(await textRequest(node.client, `ACK ${mailbox} ${id}`), ["OK 1"]);
      assert.deepEqual(await textRequest(node.client, `ACK ${mailbox} ${id}`), ["OK 0"]);
      assert.deepEqual(await textRequest(node.client, `LIST ${mailbox}`), ["END"]);
    }
    const bad = await textRequest(cluster.seeds()[0]!, "SEND bad/name x");
    assert.match(bad[0]!, /^ERR INVALID /);
  });

  test("every node serves metrics and health over HTTP", async () => {
    for (const node of cluster.nodes.values()) {
      const metrics = await (await fetch(`http://${node.http}/metrics`)).text();
      assert.match(metrics, /^ferry_raft_term\{node="\d"\} [1-9]/m);
      assert.match(metrics, /^ferry_clock_peer_rtt_ms\{peer="\d",node="\d"\} /m);
      assert.equal((await fetch(`http://${node.http}/health`)).status, 200);
    }
  });

  test("the client library sends, receives, nacks, acks; a retried id is stored once", async () => {
    const first = await client.send("lib", "one", { id: "fixed-id-1" });
    const again = await client.send("lib", "one", { id: "fixed-id-1" });
    assert.equal(again.id, first.id);
    assert.equal(again.duplicate, true);
    await client.send("lib", "two");
    let messages = await client.receive("lib", { max: 10 });
    assert.deepEqual(messages.map((m) => Buffer.from(m.body).toString()), ["one", "two"]);
    assert.equal(await client.nack("lib", [messages[0]!.id]), 1);
    messages = await client.receive("lib", { max: 10 });
    assert.equal(messages.length, 1);
    assert.equal(messages[0]!.deliveries, 2);
    assert.equal(await client.ack("lib", [messages[0]!.id]), 1);
  });

  test("a RECEIVE that carries acks acknowledges one batch and leases the next in one request; with nothing left it does not wait", async () => {
    for (const body of ["a", "b", "c", "d"]) await client.send("acking", body);
    const first = await client.receiveBatch("acking", { max: 2 });
    assert.deepEqual(first.messages.map((m) => Buffer.from(m.body).toString()), ["a", "b"]);
    const second = await client.receiveBatch("acking", { max: 2, ack: [...first.messages.map((m) => m.id), "never-leased"] });
    assert.equal(second.acked, 2);
    assert.deepEqual(second.messages.map((m) => Buffer.from(m.body).toString()), ["c", "d"]);
    const startedMs = performance.now();
    const last = await client.receiveBatch("acking", { max: 2, waitMs: 10_000, ack: second.messages.map((m) => m.id) });
    assert.deepEqual(last, { messages: [], acked: 2 });
    assert.ok(performance.now() - startedMs < 5_000, "it answered without waiting for a message");
    assert.deepEqual((await client.list("acking")).items, []);
    await assert.rejects(client.receiveBatch("acking", { ack: ["bad id"] }), (error: { code?: string }) => error.code === "INVALID");
  });

  test("a causal token puts the new timestamp above it; a token far in the future is refused", async () => {
    const seen = (await client.send("causal", "first")).timestamp;
    const token = seen + (2_000n << 16n); // a timestamp 2 s ahead of the one the client saw
    const next = await client.send("causal", "second", { after: token });
    assert.ok(next.timestamp > token, `${next.timestamp} is not above the token ${token}`);
    const later = await client.send("causal", "third");
    assert.ok(later.timestamp > next.timestamp, "timestamps keep increasing after the token");
    await assert.rejects(client.send("causal", "too far", { after: seen + (3_600_000n << 16n) }), (error: { code?: string }) => error.code === "INVALID");
  });

  test("a long poll wakes up when a message arrives", async () => {
    const waiting = client.receive("poll", { max: 1, waitMs: 5_000 });
    await sleep(300);
    await client.send("poll", "late");
    const messages = await waiting;
    assert.equal(messages.length, 1);
    assert.equal(Buffer.from(messages[0]!.body).toString(), "late");
  });

  test("killing the leader with SIGKILL under load loses nothing acknowledged", async () => {
    const leader = await cluster.waitForLeader();
    const acknowledged: string[] = [];
    let killedAt = -1;
    const producer = (async () => {
      // Until 20 sends succeed after the kill: the client must carry on by itself.
      for (let i = 0; killedAt < 0 || acknowledged.length < killedAt + 20; i++) {
        const id = `load-${i}`;
        await client.send("failover", `m${i}`, { id, timeoutMs: 20_000 });
        acknowledged.push(id);
      }
    })();
    while (acknowledged.length < 10) await sleep(10);
    await cluster.kill(leader);
    killedAt = acknowledged.length;
    await producer;
    const newLeader = await cluster.waitForLeader();
    assert.notEqual(newLeader, leader);
    cluster.spawn(leader);
    const seen = new Set<string>();
    const bodies: string[] = [];
    for (;;) {
      const batch = await client.receive("failover", { max: 500 });
      if (batch.length === 0) break;
      for (const message of batch) {
        bodies.push(Buffer.from(message.body).toString());
        seen.add(message.id);
      }
      await client.ack("failover", batch.map((m) => m.id));
    }
    assert.equal(bodies.length, seen.size, "no message is delivered twice");
    const sentBodies = new Set(bodies);
    for (let i = 0; i < acknowledged.length; i++) assert.ok(sentBodies.has(`m${i}`), `acknowledged message m${i} was lost`);
  });

  test("a wiped node comes back through a snapshot and serves reads", async () => {
    for (let i = 0; i < 300; i++) await client.send("bulk", `b${i}`);
    const leader = await cluster.waitForLeader();
    const victim = [...cluster.nodes.keys()].find((id) => id !== leader)!;
    await cluster.kill(victim);
    cluster.wipe(victim);
    for (let i = 0; i < 300; i++) await client.send("bulk", `c${i}`);
    cluster.spawn(victim);
    const address = cluster.nodes.get(victim)!.client;
    const deadline = Date.now() + 30_000;
    let items: string[] = [];
    while (Date.now() < deadline) {
      items = await textRequest(address, "LIST bulk 1000").catch(() => []);
      if (items.length >= 600) break;
      await sleep(200);
    }
    assert.ok(items.length >= 600, `the wiped node lists ${items.length} lines\n${cluster.dump()}`);
    assert.ok(cluster.nodes.get(victim)!.output.join("").includes("snapshot-installed"), "caught up through a snapshot");
  });
});
