// One long-lived client connection doing many requests: nothing accumulates per request on the
// connection (the node shares one abort signal among a connection's requests).
import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { after, before, describe, test } from "node:test";
import { TestCluster, textRequest } from "./harness.js";

describe("a long-lived connection", { timeout: 60_000 }, () => {
  let cluster: TestCluster;
  before(async () => {
    cluster = await new TestCluster({ nodes: 1 }).start();
  });
  after(async () => {
    await cluster?.stop();
  });

  test("50 linearizable LISTs on one connection leave no abort listener behind", async () => {
    const node = cluster.nodes.get(1)!;
    const [host, port] = node.client.split(":");
    const socket = netConnect({ host: host!, port: Number(port) });
    let received = "";
    const ends = new Promise<void>((resolve) => {
      socket.on("data", (chunk) => {
        received += chunk;
        if (received.split("\n").filter((line) => line === "END").length === 50) resolve();
      });
    });
    socket.write("SEND conn hello\n");
    for (let i = 0; i < 50; i++) socket.write("LIST conn\n");
    await ends;
    socket.end();
    assert.equal(received.split("\n").filter((line) => line.startsWith("ITEM ")).length, 50);
    const output = node.output.join("");
    assert.doesNotMatch(output, /MaxListenersExceededWarning/, output.slice(-2000));
  });

  test("SIGHUP does not stop a node without a users file (its default action would)", async () => {
    const node = cluster.nodes.get(1)!;
    node.child!.kill("SIGHUP");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(node.child!.exitCode, null);
    assert.deepEqual(await textRequest(node.client, "PING"), ["OK"]);
    assert.match(node.output.join(""), /sighup-ignored/);
  });
});
