// The config op and SEND's senderTime at the edge: text forms (CONFIG, SENDAT), binary frames
// and validation errors.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { SendRequest } from "../../src/protocol/api.js";
import { FerryError } from "../../src/protocol/errors.js";
import { formatConfig, parseCommand } from "../../src/protocol/text.js";
import { SERVER_LIMITS_DEFAULT } from "../../src/server/limits.js";
import type { FerryServer } from "../../src/server/server.js";
import { validateRequest } from "../../src/server/validate.js";
import { MAILBOX_DEFAULTS } from "../../src/broker/commands.js";
import type { FakeService } from "./fake-service.js";
import { BinaryClient, LineClient, startServer } from "./helpers.js";

let server: FerryServer;
let service: FakeService;
let port: number;

before(async () => {
  ({ server, service, port } = await startServer());
});
after(async () => {
  await server.close();
});

const invalid = (error: unknown): boolean => error instanceof FerryError && error.code === "INVALID";

test("parseCommand: SENDAT and CONFIG", () => {
  assert.deepEqual(parseCommand("SENDAT bob,carol 123456789012345678 hello there"), {
    kind: "request",
    request: { op: "send", recipients: ["bob", "carol"], body: new TextEncoder().encode("hello there"), senderTime: 123456789012345678n },
  });
  assert.deepEqual(parseCommand("config bob order=sender-time reorder-window-ms=500 TTL-MS=0"), {
    kind: "request",
    request: { op: "config", mailbox: "bob", settings: { order: "sender-time", reorderWindowMs: 500, ttlMs: 0 } },
  });
  assert.deepEqual(parseCommand("CONFIG bob"), { kind: "request", request: { op: "config", mailbox: "bob", settings: {} } });
  for (const line of ["SENDAT bob 12x hi", "SENDAT bob 12", "CONFIG", "CONFIG bob order", "CONFIG bob colour=red", "CONFIG bob reorder-window-ms=-1"]) {
    assert.throws(() => parseCommand(line), invalid, line);
  }
  assert.equal(formatConfig({ ...MAILBOX_DEFAULTS, order: "sender-time" }).split(" ").includes("order=sender-time"), true);
});

test("validateRequest: config settings and senderTime", () => {
  const limits = SERVER_LIMITS_DEFAULT;
  assert.deepEqual(validateRequest({ op: "config", mailbox: "bob", settings: { order: "sender-time", reorderWindowMs: 10n, extra: undefined } }, limits), {
    op: "config",
    mailbox: "bob",
    settings: { order: "sender-time", reorderWindowMs: 10 },
  });
  const send = validateRequest({ op: "send", recipients: ["bob"], body: "x", senderTime: "18446744073709551615" }, limits) as SendRequest;
  assert.equal(send.senderTime, 2n ** 64n - 1n);
  const bad: unknown[] = [
    { op: "config", mailbox: "bob", settings: { order: "random" } },
    { op: "config", mailbox: "bob", settings: { colour: "red" } },
    { op: "config", mailbox: "bob", settings: { reorderWindowMs: -1 } },
    { op: "config", mailbox: "bob", settings: { messagesMax: 1.5 } },
    { op: "config", mailbox: "bob", settings: [] },
    { op: "config", mailbox: "no spaces", settings: {} },
    { op: "send", recipients: ["bob"], body: "x", senderTime: -1 },
    { op: "send", recipients: ["bob"], body: "x", senderTime: "18446744073709551616" },
  ];
  for (const request of bad) assert.throws(() => validateRequest(request, limits), invalid, JSON.stringify(request, (_k, v) => (typeof v === "bigint" ? `${v}` : v)));
});

test("text: CONFIG answers the effective settings; SENDAT carries the sender time; errors are ERR INVALID", async () => {
  const client = await LineClient.connect(port);
  const reply = await client.request("CONFIG bob order=sender-time reorder-window-ms=500");
  assert.match(reply, /^OK visibility-ms=\d+ deliveries-max=\d+ .* order=sender-time reorder-window-ms=500$/);
  assert.deepEqual(service.calls.at(-1)!.request, { op: "config", mailbox: "bob", settings: { order: "sender-time", reorderWindowMs: 500 } });
  assert.match(await client.request("SENDAT bob 99999 hi there"), /^OK \S+$/);
  const sent = service.calls.at(-1)!.request as SendRequest;
  assert.equal(sent.senderTime, 99999n);
  assert.match(await client.request("CONFIG bob order=whenever"), /^ERR INVALID order must be one of log, sender-time/);
  assert.match(await client.request("CONFIG bob colour=red"), /^ERR INVALID CONFIG takes/);
  assert.match(await client.request("SENDAT bob soon hi"), /^ERR INVALID sender-time/);
  client.close();
});

test("binary: a config frame and a send with senderTime", async () => {
  const client = await BinaryClient.connect(port);
  const reply = await client.request({ op: "config", mailbox: "carol", settings: { order: "sender-time" } });
  assert.equal(reply.ok, true);
  assert.equal((reply.config as { order: string }).order, "sender-time");
  const sent = await client.request({ op: "send", recipients: ["carol"], body: "x", senderTime: 2n ** 60n });
  assert.equal(sent.ok, true);
  assert.equal((service.calls.at(-1)!.request as SendRequest).senderTime, 2n ** 60n);
  const bad = await client.request({ op: "config", mailbox: "carol", settings: { order: 1 } });
  assert.equal(bad.ok, false);
  assert.equal(bad.code, "INVALID");
  client.close();
});
