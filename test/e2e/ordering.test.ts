// End to end, with real processes: a sender-time mailbox delivers a late message stamped earlier
// first, once the reorder window has passed; configured through the client and the text protocol.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { sleep, TestCluster, textRequest } from "./harness.js";

const WINDOW_MS = 1000;
const hlcNow = (): bigint => BigInt(Date.now()) << 16n;
const ms = (value: number): bigint => BigInt(value) << 16n;
const text = (body: Uint8Array): string => new TextDecoder().decode(body);

describe("sender-time order on a 3-node cluster of real processes", { timeout: 120_000 }, () => {
  let cluster: TestCluster;
  let client: FerryClient;

  before(async () => {
    cluster = await new TestCluster({ nodes: 3 }).start();
    client = await connect({ seeds: cluster.seeds(), name: "e2e-order" });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test("a message stamped t sent after one stamped t+50 is received first after the window", async () => {
    const config = await client.configure("ordered", { order: "sender-time", reorderWindowMs: WINDOW_MS });
    assert.equal(config.order, "sender-time");
    assert.equal(config.reorderWindowMs, WINDOW_MS);
    const t = hlcNow();
    await client.send("ordered", "later", { senderTime: t + ms(50) });
    await client.send("ordered", "earlier", { senderTime: t });
    await sleep(WINDOW_MS + 300);
    const messages = await client.receive("ordered", { max: 10 });
    assert.deepEqual(
      messages.map((message) => [text(message.body), message.senderTime]),
      [
        ["earlier", t],
        ["later", t + ms(50)],
      ],
    );
  });

  test("a long poll wakes when the window passes; CONFIG and SENDAT work as typed into nc", async () => {
    // Sent to a follower when the first seed is not the leader: config travels through the forwarder.
    for (const seed of cluster.seeds()) {
      const reply = await textRequest(seed, "CONFIG typed order=sender-time reorder-window-ms=500");
      assert.match(reply[0]!, /^OK .*order=sender-time reorder-window-ms=500$/);
    }
    const t = hlcNow();
    const seed = cluster.seeds()[0]!;
    assert.match((await textRequest(seed, `SENDAT typed ${t + ms(50)} second`))[0]!, /^OK \S+$/);
    assert.match((await textRequest(seed, `SENDAT typed ${t} first`))[0]!, /^OK \S+$/);
    const [first] = await client.receive("typed", { max: 1, waitMs: 5000 });
    assert.equal(first === undefined ? undefined : text(first.body), "first");
    const [second] = await client.receive("typed", { max: 1, waitMs: 5000 });
    assert.equal(second === undefined ? undefined : text(second.body), "second");
  });
});
