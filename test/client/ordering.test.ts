// client.configure and SEND's senderTime against the fake binary server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { connect, type FerryClient } from "../../src/client/index.js";
import { FerryError } from "../../src/protocol/errors.js";
import { FakeServer } from "./fake-server.js";

let server: FakeServer;
let client: FerryClient;
before(async () => {
  server = await FakeServer.start();
  client = await connect({ seeds: [server.address], name: "alice", reconnectMinMs: 5, reconnectMaxMs: 20, connectTimeoutMs: 1000 });
});
after(async () => {
  await client.close();
  await server.close();
});

test("configure sends a config op and resolves with the effective settings", async () => {
  const config = await client.configure("bob", { order: "sender-time", reorderWindowMs: 250 });
  assert.equal(config.order, "sender-time");
  assert.equal(config.reorderWindowMs, 250);
  const [request] = server.requestsOf("config");
  assert.deepEqual({ mailbox: request!.mailbox, settings: request!.settings }, { mailbox: "bob", settings: { order: "sender-time", reorderWindowMs: 250 } });
  await assert.rejects(client.configure("no spaces", {}), (error) => error instanceof FerryError && error.code === "INVALID");
});

test("send carries senderTime as an int64", async () => {
  await client.send("bob", "x", { senderTime: 2n ** 62n + 7n });
  assert.equal(server.requestsOf("send").at(-1)!.senderTime, 2n ** 62n + 7n);
  await assert.rejects(client.send("bob", "x", { senderTime: -1n }), (error) => error instanceof FerryError && error.code === "INVALID");
});

function ferry(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}

test("CLI: ferry config sets the order and prints the settings; send --sender-time; bad values are usage errors", async () => {
  const seeds = ["--seeds", server.address];
  const [configured, sent, bad] = await Promise.all([
    ferry(["config", "carol", "--order", "sender-time", "--reorder-window-ms", "500", "--max-messages", "10", "--overflow", "drop-oldest", "--json", ...seeds]),
    ferry(["send", "carol", "hi", "--sender-time", "123456789", ...seeds]),
    ferry(["config", "carol", "--order", "sometimes", ...seeds]),
  ]);
  assert.equal(configured.code, 0, configured.stderr);
  assert.deepEqual(JSON.parse(configured.stdout), { order: "sender-time", reorderWindowMs: 500, messagesMax: 10, overflow: "drop-oldest" });
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(server.requestsOf("send").at(-1)!.senderTime, 123456789n);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /expected one of log, sender-time/);
});
