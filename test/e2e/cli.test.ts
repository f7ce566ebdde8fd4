// The `ferry` CLI against a real 3-node cluster: each command is a child process, as a user or a
// script runs it; stdout, stderr and exit codes are what is checked.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { TestCluster } from "./harness.js";
import { type CliRun, ferry } from "./tools.js";

describe("the ferry CLI against a 3-node cluster of real processes", { timeout: 180_000 }, () => {
  let cluster: TestCluster;
  let seeds: string[];
  const run = (...args: string[]): Promise<CliRun> => ferry([...args, ...seeds]);
  const ok = async (...args: string[]): Promise<string> => {
    const result = await run(...args);
    assert.equal(result.code, 0, `ferry ${args.join(" ")}: exit ${result.code}\n${result.stderr}`);
    return result.stdout;
  };

  before(async () => {
    cluster = await new TestCluster({ nodes: 3 }).start();
    seeds = ["--seeds", cluster.seeds().join(",")];
  });
  after(async () => {
    await cluster?.stop();
  });

  test("send prints an id; receive --ack prints the message and removes it; list shows a table", async () => {
    const id = (await ok("send", "cli-bob", "hello\nworld", "--name", "alice")).trim();
    assert.match(id, /^\S+$/);
    const table = await ok("list", "cli-bob");
    const rows = table.trim().split("\n");
    assert.match(rows[0]!, /^ID\s+SENDER\s+TIMESTAMP\s+STATE\s+DELIVERIES\s+BYTES$/);
    assert.equal(rows.length, 2, table);
    assert.match(rows[1]!, new RegExp(`^${id}\\s+alice\\s+\\d+\\s+ready\\s+0\\s+11$`));
    const listed = JSON.parse(await ok("list", "cli-bob", "--json"));
    assert.deepEqual(
      listed.items.map((item: { id: string; state: string }) => [item.id, item.state]),
      [[id, "ready"]],
    );
    const received = (await ok("receive", "cli-bob", "--max", "5", "--ack")).trim();
    assert.match(received, new RegExp(`^${id} alice \\d+ 1 hello\\\\nworld$`));
    assert.deepEqual(JSON.parse(await ok("list", "cli-bob", "--json")).items, []);
    assert.equal(await ok("receive", "cli-bob"), "", "an empty mailbox prints nothing");
  });

  test("receive --wait long-polls until a message arrives", async () => {
    const waiting = run("receive", "cli-poll", "--wait", "20000", "--ack", "--json");
    // Whether the receiver's RECEIVE is parked before this send lands or not, it gets the message.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await ok("send", "cli-poll", "late", "--id", "poll-1");
    const result = await waiting;
    assert.equal(result.code, 0, result.stderr);
    const messages = JSON.parse(result.stdout);
    assert.equal(messages.length, 1);
    assert.equal(messages[0].body, "late");
    assert.equal(messages[0].id, "poll-1");
  });

  test("ack and nack print how many leased messages they touched", async () => {
    const id = (await ok("send", "cli-acks", "job")).trim();
    const first = JSON.parse(await ok("receive", "cli-acks", "--json"));
    assert.equal(first[0].id, id);
    assert.equal(first[0].deliveries, 1);
    assert.equal((await ok("nack", "cli-acks", id)).trim(), "1");
    const second = JSON.parse(await ok("receive", "cli-acks", "--json"));
    assert.equal(second[0].deliveries, 2, "a nacked message is delivered again at once");
    assert.equal((await ok("ack", "cli-acks", id, "no-such-id")).trim(), "1");
    assert.deepEqual(JSON.parse(await ok("ack", "cli-acks", id, "--json")), { count: 0 });
  });

  test("a message nacked past the maximum deliveries (default 5) moves to <mailbox>:dlq", async () => {
    const id = (await ok("send", "cli-dlq", "poison")).trim();
    for (let delivery = 1; delivery <= 5; delivery++) {
      const [message] = JSON.parse(await ok("receive", "cli-dlq", "--json"));
      assert.equal(message?.id, id, `delivery ${delivery}`);
      assert.equal(message.deliveries, delivery);
      assert.equal((await ok("nack", "cli-dlq", id)).trim(), "1");
    }
    assert.deepEqual(JSON.parse(await ok("receive", "cli-dlq", "--json")), [], "the exhausted message is no longer delivered");
    const dead = JSON.parse(await ok("list", "cli-dlq:dlq", "--json"));
    assert.deepEqual(
      dead.items.map((item: { id: string }) => item.id),
      [id],
    );
    const [letter] = JSON.parse(await ok("receive", "cli-dlq:dlq", "--json", "--ack"));
    assert.equal(letter.body, "poison");
  });

  test("a send retried with the same --id is stored once", async () => {
    const first = JSON.parse(await ok("send", "cli-dedupe", "pay 10", "--id", "order-17", "--json"));
    const again = JSON.parse(await ok("send", "cli-dedupe", "pay 10", "--id", "order-17", "--json"));
    assert.equal(first.id, "order-17");
    assert.equal(first.duplicate, false);
    assert.equal(again.id, "order-17");
    assert.equal(again.duplicate, true);
    assert.equal(again.timestamp, first.timestamp, "the duplicate answers with the stored message's timestamp");
    const items = JSON.parse(await ok("list", "cli-dedupe", "--json")).items;
    assert.equal(items.length, 1);
  });

  test("status prints every node, one leader, the answering node starred; --json has the same", async () => {
    const table = (await ok("status")).trim().split("\n");
    assert.match(table[0]!, /^ID\s+ADDRESS\s+ROLE\s+TERM\s+COMMIT\s+APPLIED\s+LAG\s+CLOCK-OFFSET\s+HEALTHY$/);
    assert.equal(table.at(-1), "(* the node that answered)");
    const rows = table.slice(1, -1);
    assert.equal(rows.length, 3, table.join("\n"));
    assert.equal(rows.filter((row) => /\sleader\s/.test(row)).length, 1);
    assert.equal(rows.filter((row) => /^\d+\*\s/.test(row)).length, 1);
    for (const row of rows) assert.match(row, /\syes$/);
    const status = JSON.parse(await ok("status", "--json"));
    assert.equal(status.ok, true);
    assert.deepEqual(status.nodes.map((node: { id: number }) => node.id).sort(), [1, 2, 3]);
    assert.ok(status.nodes.some((node: { id: number }) => node.id === status.self));
    assert.equal(status.nodes.filter((node: { role: string }) => node.role === "leader").length, 1);
    const addresses = new Set(cluster.seeds());
    for (const node of status.nodes) assert.ok(addresses.has(node.address), `address ${node.address}`);
  });

  test("a bad mailbox name fails with exit code 2 and `error: INVALID` on stderr", async () => {
    const result = await run("send", "no spaces", "hi");
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^error: INVALID /);
    assert.equal(result.stdout, "");
    const list = await run("list", "bad/name");
    assert.equal(list.code, 2);
    assert.match(list.stderr, /^error: INVALID /);
  });

  test("send reads the body from stdin with -", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "send", "cli-stdin", "-", ...seeds], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stdin.end("from\nstdin");
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    assert.equal(code, 0);
    const [message] = JSON.parse(await ok("receive", "cli-stdin", "--json", "--ack"));
    assert.equal(message.id, stdout.trim());
    assert.equal(message.body, "from\nstdin");
  });
});
