// The binary protocol over a real socket: pipelining, out-of-order completion, errors by rid.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { encodeFrame } from "../../src/protocol/binary.js";
import type { FerryServer } from "../../src/server/server.js";
import type { FakeService } from "./fake-service.js";
import { BinaryClient, holdRequests, startServer, waitUntil } from "./helpers.js";

let server: FerryServer;
let service: FakeService;
let port: number;

before(async () => {
  ({ server, service, port } = await startServer());
});
after(async () => {
  await server.close();
});

test("hello, send, receive, ack, list, status", async () => {
  const client = await BinaryClient.connect(port);
  assert.deepEqual(await client.request({ op: "hello", name: "alice" }), { rid: 1, ok: true, name: "alice" });
  const sent = await client.request({ op: "send", recipients: ["bob"], body: Buffer.from("hi\nthere") });
  assert.equal(sent.ok, true);
  assert.equal(typeof sent.id, "string");
  assert.equal(typeof sent.timestamp, "bigint", "timestamps travel as int64 and decode as bigint");
  assert.equal(sent.duplicate, false);
  const received = await client.request({ op: "receive", mailbox: "bob", max: 10 });
  const messages = received.messages as Array<Record<string, unknown>>;
  assert.equal(messages.length, 1);
  assert.equal(messages[0]!.sender, "alice");
  assert.equal(Buffer.from(messages[0]!.body as Uint8Array).toString(), "hi\nthere");
  assert.equal(messages[0]!.timestamp, sent.timestamp);
  const listed = await client.request({ op: "list", mailbox: "bob" });
  assert.equal((listed.items as unknown[]).length, 1);
  assert.deepEqual(await client.request({ op: "ack", mailbox: "bob", ids: [sent.id] }), { rid: 5, ok: true, count: 1 });
  const status = await client.request({ op: "status" });
  assert.equal(status.self, 1);
  client.close();
});

test("pipelined requests complete out of order and are matched by rid", async () => {
  const releases = new Map<string, () => void>();
  service.gate = (request) =>
    request.op === "send" && request.recipients[0]!.startsWith("slow")
      ? new Promise<void>((resolve) => releases.set(request.recipients[0]!, resolve))
      : undefined;
  try {
    const client = await BinaryClient.connect(port);
    const replies = ["slow1", "slow2", "slow3"].map((recipient) => client.request({ op: "send", recipients: [recipient], body: "x" }));
    const fast = await client.request({ op: "status" });
    assert.equal(fast.rid, 4, "a later request answered before earlier ones still running");
    releases.get("slow3")!();
    assert.equal((await replies[2]!).rid, 3);
    releases.get("slow1")!();
    releases.get("slow2")!();
    const [first, second] = await Promise.all([replies[0]!, replies[1]!]);
    assert.deepEqual([first.rid, second.rid, first.ok, second.ok], [1, 2, true, true]);
    assert.deepEqual(
      client.received.map((frame) => frame.rid),
      [4, 3, 1, 2],
    );
    client.close();
  } finally {
    service.gate = undefined;
  }
});

test("invalid requests get an error with their rid; the connection goes on", async () => {
  const client = await BinaryClient.connect(port);
  const calls = service.calls.length;
  assert.deepEqual(await client.request({ op: "send", recipients: ["b b"], body: "x" }), {
    rid: 1,
    ok: false,
    code: "INVALID",
    message: "recipient: name may contain only A-Z a-z 0-9 . _ - :",
  });
  assert.equal((await client.request({ op: "frobnicate" })).code, "INVALID");
  assert.equal((await client.request({ op: "receive", mailbox: "bob", max: 5000 })).code, "INVALID");
  assert.equal((await client.request({ op: "ack", mailbox: "bob", ids: [] })).code, "INVALID");
  assert.equal(service.calls.length, calls, "bad input must not reach the service");
  client.writeRaw(encodeFrame({ op: "status" })); // no rid
  const [noRid] = (await client.frames(5)).slice(4);
  assert.deepEqual([noRid!.rid, noRid!.ok, noRid!.code], [0, false, "INVALID"]);
  assert.equal((await client.request({ op: "status" })).ok, true);
  // A RECEIVE's acks are checked as an ACK's ids are.
  const before = service.calls.length;
  assert.equal((await client.request({ op: "receive", mailbox: "bob", ack: [] })).code, "INVALID");
  assert.equal((await client.request({ op: "receive", mailbox: "bob", ack: ["a b"] })).code, "INVALID");
  assert.equal((await client.request({ op: "receive", mailbox: "bob", ack: "x" })).code, "INVALID");
  assert.equal((await client.request({ op: "receive", mailbox: "bob", ack: Array.from({ length: 1001 }, (_, i) => `m${i}`) })).code, "TOO_LARGE");
  assert.equal(service.calls.length, before, "bad acks must not reach the service");
  client.close();
});

test("service errors carry code, message and leader hint", async () => {
  const { FerryError } = await import("../../src/protocol/errors.js");
  service.gate = () => Promise.reject(new FerryError("NOT_LEADER", "not the leader", "127.0.0.1:12346"));
  try {
    const client = await BinaryClient.connect(port);
    assert.deepEqual(await client.request({ op: "status" }), {
      rid: 1,
      ok: false,
      code: "NOT_LEADER",
      message: "not the leader",
      leaderHint: "127.0.0.1:12346",
    });
    service.gate = () => Promise.reject(new Error("boom"));
    assert.deepEqual(await client.request({ op: "status" }), { rid: 2, ok: false, code: "INTERNAL", message: "internal error (logged on the node)" });
    client.close();
  } finally {
    service.gate = undefined;
  }
});

test("EOF from a binary client: requests read are answered, then the connection closes", async () => {
  const hold = holdRequests(service, () => true);
  const client = await BinaryClient.connect(port);
  const replies = [client.request({ op: "status" }), client.request({ op: "list", mailbox: "nobody" })];
  client.socket.end();
  await waitUntil(() => hold.count === 2);
  hold.stop();
  const settled = await Promise.all(replies);
  assert.ok(settled.every((reply) => reply.ok === true));
  await client.closed;
});

test("a reply that is not an ok reply becomes INTERNAL for that rid", async () => {
  const original = service.execute;
  service.execute = async () => undefined as never;
  try {
    const client = await BinaryClient.connect(port);
    assert.deepEqual(await client.request({ op: "status" }), { rid: 1, ok: false, code: "INTERNAL", message: "internal error (logged on the node)" });
    client.close();
  } finally {
    service.execute = original;
  }
});
