// Every server limit is enforced, with its error, and leaves the connection (or the server) usable.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { test } from "node:test";
import { encodeFrame } from "../../src/protocol/binary.js";
import { resolveLimits, SERVER_LIMITS_DEFAULT } from "../../src/server/limits.js";
import { BinaryClient, holdRequests, LineClient, startServer, waitUntil, waitUntilStable } from "./helpers.js";

test("limits have defaults and reject nonsense", () => {
  assert.deepEqual(resolveLimits(), SERVER_LIMITS_DEFAULT);
  assert.equal(resolveLimits({ bodyBytesMax: 10 }).bodyBytesMax, 10);
  assert.throws(() => resolveLimits({ bodyBytesMax: 0 }), RangeError);
  assert.throws(() => resolveLimits({ frameBytesMax: 1.5 }), RangeError);
  assert.throws(() => resolveLimits({ nonsense: 1 } as never), RangeError);
});

test("line bytes: an over-long line gets ERR TOO_LARGE and the connection stays usable", async () => {
  const { server, port } = await startServer({ limits: { lineBytesMax: 64 } });
  const client = await LineClient.connect(port);
  client.write(`SEND bob ${"x".repeat(100)}`);
  client.write(`${"y".repeat(100)}\nPING\n`);
  assert.match(await client.line(), /^ERR TOO_LARGE line of \d+\+ bytes; the limit is 64$/);
  assert.equal(await client.line(), "OK");
  client.close();
  await server.close();
});

test("body bytes: TOO_LARGE in both protocols, counted after unescaping", async () => {
  const { server, service, port } = await startServer({ limits: { bodyBytesMax: 10 } });
  const text = await LineClient.connect(port);
  assert.match(await text.request("SEND bob 0123456789"), /^OK /);
  assert.match(await text.request("SEND bob \\n\\n\\n\\n\\n\\n\\n\\n\\n\\n"), /^OK /);
  assert.equal(await text.request("SEND bob 0123456789a"), "ERR TOO_LARGE body of 11 bytes; the limit is 10");
  const binary = await BinaryClient.connect(port);
  const reply = await binary.request({ op: "send", recipients: ["bob"], body: Buffer.alloc(11) });
  assert.deepEqual([reply.ok, reply.code], [false, "TOO_LARGE"]);
  assert.equal(service.calls.length, 2);
  text.close();
  binary.close();
  await server.close();
});

test("frame bytes: an oversized frame header closes the binary connection with an error", async () => {
  const { server, port } = await startServer({ limits: { frameBytesMax: 1024 } });
  const client = await BinaryClient.connect(port);
  assert.equal((await client.request({ op: "send", recipients: ["bob"], body: Buffer.alloc(900) })).ok, true);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(1025);
  client.writeRaw(header);
  await client.closed;
  const last = client.received.at(-1)!;
  assert.deepEqual([last.rid, last.ok, last.code], [0, false, "INVALID"]);
  assert.match(String(last.message), /frame of 1025 bytes exceeds the limit of 1024/);
  assert.equal(server.stats.framingErrors, 1);
  await server.close();
});

test("a reply over the frame limit becomes a TOO_LARGE error for that rid", async () => {
  const { server, port } = await startServer({ limits: { frameBytesMax: 1024 } });
  const client = await BinaryClient.connect(port);
  for (let index = 0; index < 3; index++) await client.request({ op: "send", recipients: ["bob"], body: Buffer.alloc(900) });
  const reply = await client.request({ op: "receive", mailbox: "bob", max: 3 });
  assert.deepEqual([reply.ok, reply.code], [false, "TOO_LARGE"]);
  assert.equal((await client.request({ op: "status" })).ok, true);
  client.close();
  await server.close();
});

test("connections: the one over the limit gets ERR LIMIT and is closed; others are unaffected", async () => {
  const { server, port } = await startServer({ limits: { connectionsMax: 2 } });
  const first = await LineClient.connect(port);
  const second = await BinaryClient.connect(port);
  assert.equal(await first.request("PING"), "OK");
  const third = await LineClient.connect(port);
  assert.match(await third.line(), /^ERR LIMIT too many connections \(limit 2\)/);
  await third.closed;
  assert.equal((await second.request({ op: "status" })).ok, true);
  first.close();
  await waitUntil(() => server.connectionCount === 1);
  const fourth = await LineClient.connect(port);
  assert.equal(await fourth.request("PING"), "OK");
  assert.equal(server.stats.connectionsRejected, 1);
  second.close();
  fourth.close();
  await server.close();
});

test("requests in flight (text): beyond the limit the server stops reading, then catches up in order", async () => {
  const { server, service, port } = await startServer({ limits: { requestsInFlightMax: 4 } });
  const hold = holdRequests(service, (request) => request.op === "send");
  const client = await LineClient.connect(port);
  let script = "";
  for (let index = 0; index < 10; index++) script += `SEND bob m${index}\n`;
  client.write(script);
  await waitUntil(() => hold.count === 4);
  assert.equal(await waitUntilStable(() => service.calls.length), 4);
  hold.stop();
  const ids: string[] = [];
  for (let index = 0; index < 10; index++) ids.push(await client.line());
  assert.ok(ids.every((line) => /^OK m\d+$/.test(line)));
  client.write("RECEIVE bob 10\n");
  const bodies = (await client.untilEnd()).slice(0, -1).map((line) => line.split(" ")[5]);
  assert.deepEqual(bodies, ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
  client.close();
  await server.close();
});

test("requests in flight (binary): beyond the limit the server stops reading", async () => {
  const { server, service, port } = await startServer({ limits: { requestsInFlightMax: 3 } });
  const hold = holdRequests(service, () => true);
  const client = await BinaryClient.connect(port);
  const replies = Array.from({ length: 8 }, (_, index) => client.request({ op: "send", recipients: ["bob"], body: `m${index}` }));
  await waitUntil(() => hold.count === 3);
  assert.equal(await waitUntilStable(() => service.calls.length), 3);
  hold.stop();
  const settled = await Promise.all(replies);
  assert.ok(settled.every((reply) => reply.ok === true));
  client.close();
  await server.close();
});

test("duplicate rid in flight is refused", async () => {
  const { server, service, port } = await startServer();
  const hold = holdRequests(service, () => true);
  const client = await BinaryClient.connect(port);
  void client.request({ op: "status", rid: 7 });
  await waitUntil(() => hold.count === 1);
  client.writeRaw(encodeFrame({ op: "status", rid: 7 }));
  const [refused] = await client.frames(1);
  assert.deepEqual([refused!.rid, refused!.code], [7, "INVALID"]);
  hold.stop();
  await client.frames(2);
  client.close();
  await server.close();
});

for (const writeBufferBytesMax of [64 * 1024, 1024]) {
test(`write buffer (${writeBufferBytesMax} bytes): a client that does not read makes the server stop reading from it`, async () => {
  const big = Buffer.alloc(256 * 1024, 0x61);
  const requests = 300;
  const { server, service, port } = await startServer({ limits: { writeBufferBytesMax, requestsInFlightMax: 1000 } });
  service.gate = undefined;
  // Every receive answers with a 256 KiB message, whatever the mailbox holds.
  const original = service.execute.bind(service);
  service.execute = async (request, session, signal) => {
    if (request.op !== "receive") return original(request, session, signal);
    service.calls.push({ request, session });
    return { ok: true, messages: [{ id: "m", sender: "s", recipient: "r", timestamp: 1n, deliveries: 1, body: big }] };
  };
  const client = await BinaryClient.connect(port);
  client.socket.pause();
  const replies = Array.from({ length: requests }, () => client.request({ op: "receive", mailbox: "bob", max: 1 }));
  const executed = await waitUntilStable(() => service.calls.length);
  assert.ok(executed < requests, `the server kept reading: ${executed} of ${requests} executed`);
  assert.ok(server.stats.readPauses >= 1);
  client.socket.resume();
  const settled = await Promise.all(replies);
  assert.equal(settled.length, requests);
  client.close();
  await server.close();
});
}

test("idle timeout: idle connections are closed; a long poll is not idleness", async () => {
  const { server, port } = await startServer({ limits: { idleTimeoutMs: 100 } });
  const text = await LineClient.connect(port);
  assert.equal(await text.request("PING"), "OK");
  assert.equal(await text.line(), "ERR TIMEOUT idle for 100 ms; closing");
  await text.closed;
  const binary = await BinaryClient.connect(port);
  await binary.closed;
  const silent = connect({ port, host: "127.0.0.1" });
  await new Promise((resolve) => silent.once("close", resolve));
  const poller = await LineClient.connect(port);
  poller.write("RECEIVE nobody 1 400\n");
  assert.deepEqual(await poller.untilEnd(), ["END"]);
  await poller.closed;
  assert.ok(server.stats.idleClosed >= 3);
  await server.close();
});

test("per-request bounds: ids, recipients, wait", async () => {
  const { server, service, port } = await startServer({ limits: { idsPerRequestMax: 3, recipientsPerSendMax: 2, receiveWaitMsMax: 1000 } });
  const client = await LineClient.connect(port);
  assert.equal(await client.request("ACK bob a b c d"), "ERR TOO_LARGE 4 ids in one request; the limit is 3");
  assert.equal(await client.request("SEND a,b,c hi"), "ERR TOO_LARGE 3 recipients; the limit is 2");
  assert.equal(await client.request("SEND a,a hi"), "ERR INVALID recipients must be distinct");
  assert.equal(await client.request("RECEIVE bob 1 1001"), "ERR INVALID wait-ms must be between 0 and 1000, got 1001");
  assert.equal(service.calls.length, 0);
  client.close();
  await server.close();
});

test("lease names: malformed ones are INVALID; with ids they count toward idsPerRequestMax", async () => {
  const { server, service, port } = await startServer({ limits: { idsPerRequestMax: 3 } });
  const client = await BinaryClient.connect(port);
  const cases: Array<[Record<string, unknown>, string, string]> = [
    [{ ackLeases: [] }, "INVALID", "ackLeases must be a non-empty list"],
    [{ ackLeases: ["7.0.1764000000000", "7.0"] }, "INVALID", "lease name '7.0' is malformed"],
    [{ ackLeases: [7] }, "INVALID", "lease name '7' is malformed"],
    [{ ack: ["a", "b"], ackLeases: ["7.0.5", "8.0.5"] }, "TOO_LARGE", "2 ids and 2 lease names in one request; the limit is 3"],
  ];
  for (const [fields, code, message] of cases) {
    const reply = await client.request({ op: "receive", mailbox: "bob", max: 1, ...fields });
    assert.deepEqual([reply.ok, reply.code, reply.message], [false, code, message]);
  }
  assert.equal(service.calls.length, 0, "none reached the node");
  const fits = await client.request({ op: "receive", mailbox: "bob", max: 1, ack: ["a"], ackLeases: ["7.0.5", "8.0.5"] });
  assert.equal(fits.ok, true);
  assert.deepEqual((service.calls[0] as { request: { ackLeases?: unknown } }).request.ackLeases, ["7.0.5", "8.0.5"], "the names reach the node");
  client.close();
  await server.close();
});

test("headers bytes: TOO_LARGE over the limit", async () => {
  const { server, service, port } = await startServer({ limits: { headersBytesMax: 16 } });
  const client = await BinaryClient.connect(port);
  const fits = await client.request({ op: "send", recipients: ["bob"], body: "x", headers: { trace: "0123456789a" } });
  assert.equal(fits.ok, true);
  const over = await client.request({ op: "send", recipients: ["bob"], body: "x", headers: { trace: "0123456789ab" } });
  assert.deepEqual([over.ok, over.code, over.message], [false, "TOO_LARGE", "headers of 17 bytes; the limit is 16"]);
  const bad = await client.request({ op: "send", recipients: ["bob"], body: "x", headers: { trace: 5 } });
  assert.equal(bad.code, "INVALID");
  assert.equal(service.calls.length, 1);
  client.close();
  await server.close();
});
