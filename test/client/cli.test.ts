// The `ferry` CLI as a user runs it: a child process against the fake server, checking stdout,
// stderr and exit codes.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { FakeServer } from "./fake-server.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ferry(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

let server: FakeServer;
let seeds: string[];
before(async () => {
  server = await FakeServer.start();
  seeds = ["--seeds", server.address];
});
after(() => server.close());

test("send then receive --json --ack: the message, its sender, and it is gone after", async () => {
  const sent = await ferry(["send", "bob", "hello\nworld", "--name", "alice", ...seeds]);
  assert.equal(sent.code, 0, sent.stderr);
  const id = sent.stdout.trim();
  const received = await ferry(["receive", "bob", "--max", "5", "--ack", "--json", ...seeds]);
  assert.equal(received.code, 0, received.stderr);
  const [message] = JSON.parse(received.stdout);
  assert.equal(message.id, id);
  assert.equal(message.sender, "alice");
  assert.equal(message.body, "hello\nworld");
  assert.match(message.timestamp, /^\d+$/);
  assert.equal(server.mailbox("bob").length, 0);
});

test("receive prints one escaped line per message; list prints a table; seeds come from FERRY_SEEDS", async () => {
  const env = { FERRY_SEEDS: server.address };
  await ferry(["send", "carol", "two\nlines"], env);
  const list = await ferry(["list", "carol"], env);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^ID\s+SENDER\s+TIMESTAMP\s+STATE\s+DELIVERIES\s+BYTES\n\S+\s+anonymous\s+\d+\s+ready\s+0\s+9\n$/);
  const received = await ferry(["receive", "carol"], env);
  assert.match(received.stdout, /^\S+ anonymous \d+ 1 two\\nlines\n$/);
});

test("consume --count prints and acks messages as they come; purge empties a mailbox", async () => {
  for (const body of ["a", "b", "c"]) server.store("feed", body);
  const consumed = await ferry(["consume", "feed", "--count", "2", "--max", "1", "--json", ...seeds]);
  assert.equal(consumed.code, 0, consumed.stderr);
  const lines = consumed.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(
    lines.map((message) => message.body),
    ["a", "b"],
  );
  assert.deepEqual(
    server.mailbox("feed").map((message) => new TextDecoder().decode(message.body)),
    ["c"],
  );
  const purged = await ferry(["purge", "feed", ...seeds]);
  assert.equal(purged.stdout, "1\n");
  assert.equal(server.mailbox("feed").length, 0);
});

test("status prints the node table; cluster add passes the addresses", async () => {
  const status = await ferry(["status", ...seeds]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /ID\s+ADDRESS\s+ROLE\s+TERM\s+COMMIT\s+APPLIED\s+LAG\s+CLOCK-OFFSET\s+HEALTHY/);
  assert.match(status.stdout, /1\*\s+127\.0\.0\.1:\d+\s+leader\s+3\s+42\s+42\s+0\s+0\.0 ms\s+yes/);
  assert.match(status.stdout, /3\s+127\.0\.0\.1:3\s+follower.*NO/);
  const added = await ferry(["cluster", "add", "4", "--peer", "127.0.0.1:22348", "--client", "127.0.0.1:12348", "--json", ...seeds]);
  assert.equal(added.code, 0, added.stderr);
  assert.deepEqual(JSON.parse(added.stdout), { message: "add 4 accepted" });
  assert.equal(server.requestsOf("cluster").at(-1)!.clientAddress, "127.0.0.1:12348");
});

test("status asks the leader the first node names, for the complete view", async (t) => {
  const follower = await FakeServer.start();
  t.after(() => follower.close());
  follower.statusLeader = server.address;
  const status = await ferry(["status", "--json", "--seeds", follower.address]);
  assert.equal(status.code, 0, status.stderr);
  const reply = JSON.parse(status.stdout);
  assert.equal(reply.nodes[0].address, server.address); // the leader answered about itself
  assert.equal(reply.nodes[0].role, "leader");
});

test("errors print `error: <CODE> <message>` and exit with the code's status", async () => {
  const usage = await ferry(["receive", "bob", "--max", "lots", ...seeds]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /^error: INVALID option '--max <n>'/);
  const badName = await ferry(["send", "not a name", "x", ...seeds]);
  assert.equal(badName.code, 2);
  assert.match(badName.stderr, /^error: INVALID recipient/);
  server.faults.push({ op: "ack", kind: "error", code: "NOT_FOUND", message: "no mailbox zed" });
  const missing = await ferry(["ack", "zed", "m1", ...seeds]);
  assert.equal(missing.code, 3);
  assert.equal(missing.stderr, "error: NOT_FOUND no mailbox zed\n");
  const down = await ferry(["status", "--seeds", "127.0.0.1:1", "--timeout", "200"]);
  assert.equal(down.code, 5);
  assert.match(down.stderr, /^error: UNAVAILABLE cannot connect to 127\.0\.0\.1:1/);
});

test("--tls-ca talks TLS to a node with that certificate", async (t) => {
  const certFile = new URL("./fixtures/test-cert.pem", import.meta.url);
  const secure = await FakeServer.start({ tls: { key: readFileSync(new URL("./fixtures/test-key.pem", import.meta.url)), cert: readFileSync(certFile) } });
  t.after(() => secure.close());
  const sent = await ferry(["send", "bob", "sealed", "--seeds", secure.address, "--tls-ca", fileURLToPath(certFile)]);
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(secure.mailbox("bob").length, 1);
  const plain = await ferry(["status", "--seeds", secure.address, "--timeout", "300"]);
  assert.equal(plain.code, 5);
});

test("every command has --help", async () => {
  const commands = [["send"], ["receive"], ["consume"], ["list"], ["purge"], ["ack"], ["nack"], ["status"], ["config"], ["cluster", "add"], ["cluster", "remove"], ["cluster", "transfer"]];
  const runs = await Promise.all(commands.map((command) => ferry([...command, "--help"])));
  runs.forEach((run, index) => {
    assert.equal(run.code, 0, commands[index]!.join(" "));
    assert.match(run.stdout, new RegExp(`^Usage: ferry ${commands[index]!.join(" ")} `));
    assert.match(run.stdout, /--json/);
  });
});
