// Long polls end with the client: a waiting RECEIVE stops waiting when its binary client ends its
// input, goes away or cancels it (CANCEL), and what a RECEIVE leases for a client that is gone
// by the time it is answered is given back at once. Otherwise those messages would be leased to
// nobody and stay hidden for their visibility timeout (30 s by default).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Reply, Request } from "../../src/protocol/api.js";
import { encodeFrame } from "../../src/protocol/binary.js";
import { FerryError } from "../../src/protocol/errors.js";
import { ForwardingService, ForwardProofVerifier, forwardProof } from "../../src/server/forwarder.js";
import type { FerryServer } from "../../src/server/server.js";
import type { Service } from "../../src/server/service.js";
import type { FakeService } from "./fake-service.js";
import { BinaryClient, holdRequests, LineClient, startServer, waitUntil } from "./helpers.js";

const LONG_WAIT_MS = 60_000; // longer than each test's timeout: a wait that does not end fails the test

describe("long polls on one server", { timeout: 15_000 }, () => {
  let server: FerryServer;
  let service: FakeService;
  let port: number;
  before(async () => {
    ({ server, service, port } = await startServer());
  });
  after(async () => {
    await server.close();
  });

  const reachedService = (mailbox: string, op = "receive") => service.calls.some((call) => call.request.op === op && (call.request as { mailbox?: string }).mailbox === mailbox);

  test("CANCEL ends the wait of a RECEIVE by its rid: it answers at once with what it has", async () => {
    const client = await BinaryClient.connect(port);
    const polled = client.request({ rid: 7, op: "receive", mailbox: "lp-cancel", max: 1, waitMs: LONG_WAIT_MS });
    await waitUntil(() => reachedService("lp-cancel"));
    const stoppedBefore = server.stats.waitsStopped;
    assert.deepEqual(await client.request({ rid: 8, op: "cancel", of: 7 }), { rid: 8, ok: true, cancelled: true });
    assert.deepEqual(await polled, { rid: 7, ok: true, messages: [] });
    assert.equal(server.stats.waitsStopped, stoppedBefore + 1);
    // Nothing waits under rid 7 any more; a rid out of range is refused.
    assert.deepEqual(await client.request({ rid: 9, op: "cancel", of: 7 }), { rid: 9, ok: true, cancelled: false });
    const refused = await client.request({ rid: 10, op: "cancel", of: 0 });
    assert.equal(refused.code, "INVALID");
    // The connection goes on.
    assert.equal((await client.request({ op: "send", recipients: ["lp-cancel"], body: Buffer.from("x") })).ok, true);
    client.close();
  });

  test("EOF ends a binary long poll; the half-closed client still gets its answer", async () => {
    const client = await BinaryClient.connect(port);
    const polled = client.request({ rid: 1, op: "receive", mailbox: "lp-eof", max: 1, waitMs: LONG_WAIT_MS });
    await waitUntil(() => reachedService("lp-eof"));
    client.socket.end();
    assert.deepEqual(await polled, { rid: 1, ok: true, messages: [] });
    await client.closed;
  });

  test("a text long poll goes on after EOF (nc half-closes at the end of its input) and is answered", async () => {
    const client = await LineClient.connect(port);
    client.write(`RECEIVE lp-text 1 ${LONG_WAIT_MS}\n`);
    await waitUntil(() => reachedService("lp-text"));
    client.socket.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const other = await LineClient.connect(port);
    assert.match(await other.request("SEND lp-text hello"), /^OK /);
    other.close();
    const lines = await client.untilEnd();
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^MSG .* hello$/);
  });

  test("a RECEIVE answered after its client is gone gives what it leased back at once", async () => {
    const sender = await BinaryClient.connect(port);
    assert.equal((await sender.request({ op: "send", recipients: ["lp-gone"], body: Buffer.from("kept") })).ok, true);
    const held = holdRequests(service, (request) => request.op === "receive" && request.mailbox === "lp-gone");
    const client = await BinaryClient.connect(port);
    void client.request({ op: "receive", mailbox: "lp-gone", max: 10 });
    await waitUntil(() => held.count === 1);
    const connections = server.connectionCount;
    // A reset, as from a client that died with unread data: the server knows at once that it is
    // gone (after a plain FIN it could not tell until it wrote; EOF then ends only the waits).
    client.socket.resetAndDestroy();
    await waitUntil(() => server.connectionCount === connections - 1);
    const givenBackBefore = server.stats.messagesGivenBack;
    held.stop(); // the RECEIVE now leases the message, for a client that is gone
    await waitUntil(() => reachedService("lp-gone", "nack"));
    assert.equal(server.stats.messagesGivenBack, givenBackBefore + 1);
    const received = await sender.request({ op: "receive", mailbox: "lp-gone", max: 10 });
    const messages = received.messages as Array<{ body: Uint8Array; deliveries: number }>;
    assert.equal(messages.length, 1, "the message is visible again, not hidden for its lease");
    assert.equal(Buffer.from(messages[0]!.body).toString(), "kept");
    assert.equal(messages[0]!.deliveries, 2);
    sender.close();
  });
});

test("CANCEL is answered as soon as it is read, and a queued RECEIVE it names starts without a wait", { timeout: 15_000 }, async () => {
  const { server, service, port } = await startServer({ limits: { requestsInFlightMax: 2 } });
  try {
    const client = await BinaryClient.connect(port);
    const frameOf = (rid: number) => client.received.find((frame) => frame.rid === rid);
    const short = client.request({ rid: 1, op: "receive", mailbox: "lp-full", max: 1, waitMs: 300 });
    await waitUntil(() => service.calls.length === 1);
    // One write: rid 2 takes the last slot, rid 3 is queued for one, and the CANCEL names rid 3.
    client.writeRaw(
      Buffer.concat([
        encodeFrame({ rid: 2, op: "receive", mailbox: "lp-full", max: 1, waitMs: LONG_WAIT_MS }),
        encodeFrame({ rid: 3, op: "receive", mailbox: "lp-full", max: 1, waitMs: LONG_WAIT_MS }),
        encodeFrame({ rid: 10, op: "cancel", of: 3 }),
      ]),
    );
    await waitUntil(() => frameOf(10) !== undefined);
    assert.deepEqual(frameOf(10), { rid: 10, ok: true, cancelled: true });
    assert.equal(frameOf(1), undefined, "answered while rid 3 still waited for a slot");
    assert.deepEqual(await short, { rid: 1, ok: true, messages: [] });
    await waitUntil(() => frameOf(3) !== undefined);
    assert.deepEqual(frameOf(3), { rid: 3, ok: true, messages: [] }, "it started without a wait");
    assert.deepEqual(await client.request({ rid: 11, op: "cancel", of: 2 }), { rid: 11, ok: true, cancelled: true });
    await waitUntil(() => frameOf(2) !== undefined);
    assert.deepEqual(frameOf(2), { rid: 2, ok: true, messages: [] });
    client.close();
  } finally {
    await server.close();
  }
});

test("a follower's forwarding connection runs up to forwardedRequestsInFlightMax requests, a client's up to requestsInFlightMax", { timeout: 15_000 }, async () => {
  const verifier = new ForwardProofVerifier("ferry", "secret");
  const { server, service, port } = await startServer({ limits: { requestsInFlightMax: 2, forwardedRequestsInFlightMax: 5 }, verifyForwarder: (proof) => verifier.verify(proof) });
  try {
    const running = (mailbox: string) => service.calls.filter((call) => call.request.op === "receive" && call.request.mailbox === mailbox).length;
    const forwarder = await BinaryClient.connect(port);
    assert.equal((await forwarder.request({ op: "hello", name: "node-2", forwardProof: forwardProof("ferry", "secret") })).ok, true);
    const client = await BinaryClient.connect(port);
    for (let i = 0; i < 6; i++) {
      void forwarder.request({ op: "receive", mailbox: "lp-fw-limit", max: 1, waitMs: LONG_WAIT_MS });
      void client.request({ op: "receive", mailbox: "lp-client-limit", max: 1, waitMs: LONG_WAIT_MS });
    }
    await waitUntil(() => running("lp-fw-limit") === 5 && running("lp-client-limit") === 2);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(running("lp-fw-limit"), 5);
    assert.equal(running("lp-client-limit"), 2);
    forwarder.socket.end(); // EOF ends their waits
    client.socket.end();
    await Promise.all([forwarder.closed, client.closed]);
  } finally {
    await server.close();
  }
});

describe("forwarded long polls", { timeout: 15_000 }, () => {
  let leader: { server: FerryServer; service: FakeService; port: number };
  let follower: FerryServer;
  let forwarding: ForwardingService;
  before(async () => {
    const verifier = new ForwardProofVerifier("ferry", "secret");
    leader = await startServer({ verifyForwarder: (proof) => verifier.verify(proof) });
    const leaderAddress = `127.0.0.1:${leader.port}`;
    const local: Service = {
      execute(_request: Request): Promise<Reply> {
        return Promise.reject(new FerryError("NOT_LEADER", "not the leader", leaderAddress));
      },
    };
    forwarding = new ForwardingService(local, { proof: () => forwardProof("ferry", "secret"), name: "node-2" });
    ({ server: follower } = await startServer({ service: forwarding }));
  });
  after(async () => {
    forwarding.close();
    await follower.close();
    await leader.server.close();
  });

  const reachedLeader = (mailbox: string, op = "receive") => leader.service.calls.some((call) => call.request.op === op && (call.request as { mailbox?: string }).mailbox === mailbox);

  test("a client that leaves a follower ends the leader's wait (CANCEL), so later messages are not taken", async () => {
    const client = await BinaryClient.connect(follower.address().port);
    void client.request({ op: "receive", mailbox: "fw-wait", max: 10, waitMs: LONG_WAIT_MS });
    await waitUntil(() => reachedLeader("fw-wait"));
    const stoppedBefore = leader.server.stats.waitsStopped;
    client.close();
    await waitUntil(() => leader.server.stats.waitsStopped === stoppedBefore + 1);
    const direct = await BinaryClient.connect(leader.port);
    assert.equal((await direct.request({ op: "send", recipients: ["fw-wait"], body: Buffer.from("later") })).ok, true);
    const received = await direct.request({ op: "receive", mailbox: "fw-wait", max: 10 });
    assert.equal((received.messages as unknown[]).length, 1, "the message was not leased to the long poll of a client that left");
    direct.close();
  });

  test("what a forwarded RECEIVE leases after its client left is given back by the follower", async () => {
    const direct = await BinaryClient.connect(leader.port);
    assert.equal((await direct.request({ op: "send", recipients: ["fw-gone"], body: Buffer.from("kept") })).ok, true);
    const held = holdRequests(leader.service, (request) => request.op === "receive" && request.mailbox === "fw-gone");
    const client = await BinaryClient.connect(follower.address().port);
    void client.request({ op: "receive", mailbox: "fw-gone", max: 10 });
    await waitUntil(() => held.count === 1);
    client.socket.resetAndDestroy(); // gone for certain (see the single-server test)
    await waitUntil(() => follower.connectionCount === 0);
    held.stop(); // the leader leases the message and answers the follower, whose client is gone
    await waitUntil(() => reachedLeader("fw-gone", "nack"));
    const received = await direct.request({ op: "receive", mailbox: "fw-gone", max: 10 });
    const messages = received.messages as Array<{ deliveries: number }>;
    assert.equal(messages.length, 1, "the message is visible again, not hidden for its lease");
    assert.equal(messages[0]!.deliveries, 2);
    direct.close();
  });
});
