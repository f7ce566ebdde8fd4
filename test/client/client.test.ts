// The client library against the fake binary server: round trips, pipelining, the window,
// deadlines, aborts, reconnects, leader discovery and the retry rules.
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { readFileSync } from "node:fs";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { connect, FerryClient } from "../../src/client/index.js";
import { FerryError } from "../../src/protocol/errors.js";
import { FakeServer } from "./fake-server.js";

const fast = { reconnectMinMs: 5, reconnectMaxMs: 20, connectTimeoutMs: 1000 };
const text = (body: Uint8Array) => new TextDecoder().decode(body);

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// A port nothing listens on: listen, note the port, close.
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

describe("client against one leader", () => {
  let server: FakeServer;
  let client: FerryClient;
  before(async () => {
    server = await FakeServer.start();
    client = await connect({ seeds: [server.address], name: "alice", ...fast });
  });
  after(async () => {
    await client.close();
    await server.close();
  });

  test("send, receive, ack round trip with identity, bytes and bigint timestamps", async () => {
    const sent = await client.send("bob", "hello bob", { headers: { kind: "greeting" } });
    assert.equal(sent.duplicate, false);
    assert.equal(typeof sent.timestamp, "bigint");
    const messages = await client.receive("bob", { max: 10 });
    assert.equal(messages.length, 1);
    const [message] = messages;
    assert.equal(message!.id, sent.id);
    assert.equal(message!.sender, "alice");
    assert.equal(text(message!.body), "hello bob");
    assert.deepEqual(message!.headers, { kind: "greeting" });
    assert.equal(message!.timestamp, sent.timestamp);
    assert.equal(await client.ack("bob", [message!.id]), 1);
    assert.deepEqual(await client.receive("bob"), []);
    assert.equal(server.requestsOf("hello").length, 1);
  });

  test("a send without an id gets a generated one; a given id is kept and deduplicated", async () => {
    const generated = await client.send("carol", new Uint8Array([1, 2, 3]));
    assert.match(generated.id, /^[0-9a-f-]{36}$/);
    assert.equal(server.requestsOf("send").at(-1)!.id, generated.id);
    const first = await client.send(["carol", "dave"], "fan-out", { id: "order-7" });
    const again = await client.send(["carol", "dave"], "fan-out", { id: "order-7" });
    assert.equal(first.id, "order-7");
    assert.equal(again.duplicate, true);
    assert.equal(server.mailbox("dave").length, 1);
  });

  test("pipelined requests share one connection and settle out of order", async () => {
    server.delayMs = (request) => (text(request.body as Uint8Array) === "slow" ? 150 : 0);
    const order: string[] = [];
    const slow = client.send("erin", "slow").then(() => order.push("slow"));
    const quick = client.send("erin", "quick").then(() => order.push("quick"));
    await Promise.all([slow, quick]);
    server.delayMs = () => 0;
    assert.deepEqual(order, ["quick", "slow"]);
    assert.equal(server.connectionsAccepted, 1);
    assert.ok(server.inFlightMax >= 2);
  });

  test("property: whatever the reply order, each call gets its own reply", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(20), { minLength: 1, maxLength: 30 }), async (delays) => {
        const delayOf = new Map<string, number>();
        server.delayMs = (request) => delayOf.get(String(request.id)) ?? 0;
        const ids = delays.map((delay, index) => {
          const id = `prop-${server.requests.length}-${index}`;
          delayOf.set(id, delay);
          return id;
        });
        const replies = await Promise.all(ids.map((id) => client.send("prop", id, { id })));
        assert.deepEqual(
          replies.map((reply) => reply.id),
          ids,
        );
      }),
      { numRuns: 15 },
    );
    server.delayMs = () => 0;
  });

  test("list, nack, extend, status and cluster", async () => {
    await client.send("frank", "one");
    const [leased] = await client.receive("frank", { visibilityMs: 5000 });
    const listed = await client.list("frank");
    assert.equal(listed.items[0]!.state, "leased");
    assert.equal(typeof listed.items[0]!.timestamp, "bigint");
    assert.equal(await client.extend("frank", [leased!.id], 10_000), 1);
    assert.equal(await client.nack("frank", [leased!.id]), 1);
    const [redelivered] = await client.receive("frank");
    assert.equal(redelivered!.deliveries, 2);
    const status = await client.status();
    assert.equal(status.nodes.length, 3);
    assert.equal(status.self, 1);
    const cluster = await client.cluster("add", 4, { peerAddress: "127.0.0.1:22348", clientAddress: "127.0.0.1:12348" });
    assert.match(cluster.message, /add 4/);
    await client.send("gone", "x");
    assert.equal(await client.purge("gone"), 1);
    assert.equal(await client.deleteMailbox("gone"), 0);
    assert.equal(server.requestsOf("cluster").at(-1)!.peerAddress, "127.0.0.1:22348");
  });

  test("acks of more ids than one request may carry are split and their counts added", async () => {
    for (let index = 0; index < 2500; index++) server.store("bulk", `m${index}`);
    const messages = await client.receive("bulk", { max: 1000 });
    const more = [...(await client.receive("bulk", { max: 1000 })), ...(await client.receive("bulk", { max: 1000 }))];
    const acks = server.requestsOf("ack").length;
    assert.equal(await client.ack("bulk", [...messages, ...more].map((message) => message.id)), 2500);
    assert.equal(server.requestsOf("ack").length - acks, 3);
    assert.ok(server.requestsOf("ack").every((request) => (request.ids as string[]).length <= 1000));
  });

  test("bad arguments fail with INVALID before anything is sent", async () => {
    const sends = server.requestsOf("send").length;
    for (const attempt of [
      () => client.send("no spaces allowed", "x"),
      () => client.send([], "x"),
      () => client.receive("bob", { max: 0 }),
      () => client.cluster("add", 4),
    ]) {
      const error = await rejection(attempt());
      assert.ok(error instanceof FerryError);
      assert.equal(error.code, "INVALID");
    }
    assert.equal(server.requestsOf("send").length, sends);
  });
});

describe("window, deadlines and aborts", () => {
  test("no more than `window` requests are in flight; the rest wait and then complete", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], window: 4, ...fast });
    server.hold = true;
    const sends = Array.from({ length: 10 }, (_, index) => client.send("queue", `job ${index}`));
    await until(() => server.heldCount === 4, "four held requests");
    await new Promise((resolve) => setTimeout(resolve, 30)); // room for a wrongly admitted fifth
    assert.equal(server.requestsOf("send").length, 4);
    assert.deepEqual(client.pending, { inFlight: 4, waiting: 6 });
    server.releaseHeld();
    const replies = await Promise.all(sends);
    assert.equal(new Set(replies.map((reply) => reply.id)).size, 10);
    assert.ok(server.inFlightMax <= 4);
    assert.deepEqual(client.pending, { inFlight: 0, waiting: 0 });
    await client.close();
    await server.close();
  });

  test("a call without an answer fails with TIMEOUT and a receive is not repeated", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], attemptTimeoutMs: 20, ...fast });
    server.faults.push({ op: "receive", kind: "ignore" });
    const error = await rejection(client.receive("bob", { timeoutMs: 100 }));
    assert.ok(error instanceof FerryError);
    assert.equal(error.code, "TIMEOUT");
    assert.equal(server.requestsOf("receive").length, 1);
    assert.equal(client.pending.inFlight, 0);
    // The connection is still good for the next call.
    assert.deepEqual(await client.receive("bob"), []);
    await client.close();
    await server.close();
  });

  test("aborting rejects with the signal's reason and frees the window slot", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], window: 1, ...fast });
    server.hold = true;
    const controller = new AbortController();
    const held = client.send("bob", "held", { signal: controller.signal });
    const queued = client.send("bob", "queued");
    await until(() => server.heldCount === 1, "held request");
    controller.abort(new Error("caller gave up"));
    const error = await rejection(held);
    assert.equal((error as Error).message, "caller gave up");
    server.releaseHeld();
    await queued; // got the slot the aborted call gave back
    const already = await rejection(client.status({ signal: AbortSignal.abort(new Error("before start")) }));
    assert.equal((already as Error).message, "before start");
    await client.close();
    await server.close();
  });
});

describe("failures, reconnects and leaders", () => {
  test("a send survives a dropped connection, is resent with the same id on a new connection", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], ...fast });
    server.faults.push({ op: "send", kind: "drop" });
    const reply = await client.send("bob", "survivor");
    const sends = server.requestsOf("send");
    assert.equal(sends.length, 2);
    assert.equal(sends[0]!.id, sends[1]!.id);
    assert.equal(reply.id, sends[0]!.id);
    assert.equal(server.connectionsAccepted, 2);
    assert.equal(server.mailbox("bob").length, 1);
    await client.close();
    await server.close();
  });

  test("many sends through lost requests and lost answers: each stored exactly once", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], ...fast });
    let count = 0;
    server.faultFor = (request) => {
      if (request.op !== "send") return undefined;
      count++;
      if (count % 53 === 0) return { kind: "drop" }; // lost before it was applied
      if (count % 37 === 0) return { kind: "apply-then-drop" }; // applied, answer lost
      return undefined;
    };
    const replies = await Promise.all(Array.from({ length: 200 }, (_, index) => client.send("ledger", `entry ${index}`)));
    server.faultFor = () => undefined;
    const stored = server.mailbox("ledger").map((message) => message.id);
    assert.equal(stored.length, 200);
    assert.equal(new Set(stored).size, 200);
    assert.deepEqual(new Set(stored), new Set(replies.map((reply) => reply.id)));
    assert.ok(replies.some((reply) => reply.duplicate), "some answers were lost after the message was stored");
    assert.ok(server.connectionsAccepted > 1);
    await client.close();
    await server.close();
  });

  test("retryable error replies resend a send with the same id, caller-given or generated", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], ...fast });
    server.faults.push({ op: "send", kind: "error", code: "NO_QUORUM" }, { op: "send", kind: "error", code: "TIMEOUT" });
    await client.send("bob", "a", { id: "fixed-id" });
    assert.deepEqual(server.requestsOf("send").map((request) => request.id), ["fixed-id", "fixed-id", "fixed-id"]);
    server.faults.push({ op: "send", kind: "error", code: "OVERLOADED" });
    await client.send("bob", "b");
    const [first, second] = server.requestsOf("send").slice(3);
    assert.equal(first!.id, second!.id);
    await client.close();
    await server.close();
  });

  test("a receive is repeated after NOT_LEADER or OVERLOADED, not after TIMEOUT or a lost connection", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], ...fast });
    server.store("bob", "waiting");
    server.faults.push({ op: "receive", kind: "error", code: "OVERLOADED" });
    assert.equal((await client.receive("bob")).length, 1);
    assert.equal(server.requestsOf("receive").length, 2);

    server.faults.push({ op: "receive", kind: "error", code: "TIMEOUT" });
    const timeout = await rejection(client.receive("bob"));
    assert.equal((timeout as FerryError).code, "TIMEOUT");
    assert.equal(server.requestsOf("receive").length, 3);

    server.faults.push({ op: "ack", kind: "drop" });
    const lost = await rejection(client.ack("bob", ["x"]));
    assert.equal((lost as FerryError).code, "UNAVAILABLE");
    assert.equal(server.requestsOf("ack").length, 1);
    // The next call reconnects.
    assert.deepEqual(await client.receive("bob"), []);
    await client.close();
    await server.close();
  });

  test("a follower's leader hint redirects, and later calls go to the leader directly", async () => {
    const leader = await FakeServer.start();
    const follower = await FakeServer.start({ role: "follower", leaderHint: leader.address });
    const client = await connect({ seeds: [follower.address], name: "alice", ...fast });
    await client.send("bob", "via hint");
    await client.receive("bob");
    assert.equal(follower.requestsOf("send").length, 1);
    assert.equal(follower.requestsOf("receive").length, 0);
    assert.equal(leader.requestsOf("send").length, 1);
    assert.equal(leader.requestsOf("receive").length, 1);
    assert.equal(leader.requestsOf("hello").length, 1);
    assert.equal(client.address, leader.address);
    await client.close();
    await Promise.all([leader.close(), follower.close()]);
  });

  test("leader discovery: a forwarding follower's status names the leader and the client moves there", async () => {
    const leader = await FakeServer.start();
    const follower = await FakeServer.start();
    follower.statusLeader = leader.address;
    const events: unknown[] = [];
    const listen = (event: unknown) => events.push(event);
    diagnostics.subscribe("ferry:client:leader", listen);
    const client = await connect({ seeds: [follower.address], ...fast });
    await until(() => client.address === leader.address, "the move to the leader");
    diagnostics.unsubscribe("ferry:client:leader", listen);
    await client.send("bob", "direct");
    assert.equal(leader.requestsOf("send").length, 1);
    assert.equal(follower.requestsOf("send").length, 0);
    assert.deepEqual(events, [{ from: follower.address, to: leader.address }]);
    await client.close();
    await Promise.all([leader.close(), follower.close()]);
  });

  test("an answer a follower forwarded names the leader: later calls go there (leadership moved after connecting)", async () => {
    const leader = await FakeServer.start();
    const follower = await FakeServer.start(); // STATUS says it leads: discovery keeps the client here
    const client = await connect({ seeds: [follower.address], ...fast });
    await client.send("bob", "first");
    assert.equal(client.address, follower.address);
    follower.forwardedLeaderHint = leader.address; // leadership moved; the follower now forwards
    const events: unknown[] = [];
    const listen = (event: unknown) => events.push(event);
    diagnostics.subscribe("ferry:client:leader", listen);
    await client.send("bob", "forwarded");
    await client.send("bob", "direct");
    diagnostics.unsubscribe("ferry:client:leader", listen);
    assert.equal(client.address, leader.address);
    assert.equal(follower.requestsOf("send").length, 2);
    assert.equal(leader.requestsOf("send").length, 1);
    assert.deepEqual(events, [{ from: follower.address, to: leader.address }]);
    await client.close();
    await Promise.all([leader.close(), follower.close()]);
  });

  test("leader discovery does not chase a leader address that refuses connections", async () => {
    const follower = await FakeServer.start();
    follower.statusLeader = `127.0.0.1:${await closedPort()}`;
    const client = await connect({ seeds: [follower.address], ...fast });
    await until(() => client.address === follower.statusLeader, "the move to the advertised leader");
    await client.send("bob", "still delivered"); // refused there, back to the seed
    await client.send("bob", "and again");
    assert.equal(follower.requestsOf("send").length, 2);
    assert.equal(client.address, follower.address);
    assert.equal(follower.requestsOf("status").length, 2); // asked again after reconnecting, not followed
    await client.close();
    await follower.close();
  });

  test("an unreachable seed is skipped; a NOT_LEADER without hint moves to the next seed; retries are published", async () => {
    const leader = await FakeServer.start();
    const lost = await FakeServer.start({ role: "follower" });
    const down = `127.0.0.1:${await closedPort()}`;
    const events: unknown[] = [];
    const listen = (event: unknown) => events.push(event);
    diagnostics.subscribe("ferry:client:retry", listen);
    const client = await connect({ seeds: [down, lost.address, leader.address], ...fast });
    await client.send("bob", "found you");
    diagnostics.unsubscribe("ferry:client:retry", listen);
    assert.equal(leader.requestsOf("send").length, 1);
    assert.equal(lost.requestsOf("send").length, 1);
    assert.deepEqual(
      events.map((event) => {
        const { op, code, from, to } = event as Record<string, unknown>;
        return { op, code, from, to };
      }),
      [
        { op: "connect", code: "UNAVAILABLE", from: down, to: lost.address },
        { op: "send", code: "NOT_LEADER", from: lost.address, to: leader.address },
      ],
    );
    await client.close();
    await Promise.all([leader.close(), lost.close()]);
  });

  test("a first attempt on the open connection that fails follows the retry rules: free redirect, retry 0, slot and deadline freed", async () => {
    const leader = await FakeServer.start();
    const follower = await FakeServer.start({ role: "follower", leaderHint: leader.address });
    // Backoff longer than the calls' deadline: only a free redirect or no retry at all can pass.
    const client = await connect({ seeds: [follower.address], discoverLeader: false, reconnectMinMs: 60_000, reconnectMaxMs: 60_000, connectTimeoutMs: 1000 });
    const events: Array<Record<string, unknown>> = [];
    const listen = (event: unknown) => events.push(event as Record<string, unknown>);
    diagnostics.subscribe("ferry:client:retry", listen);
    try {
      const reply = await client.send("bob", "redirected", { timeoutMs: 2000 });
      assert.equal(follower.requestsOf("send")[0]!.id, reply.id);
      assert.equal(leader.requestsOf("send")[0]!.id, reply.id);
      assert.deepEqual(
        events.map(({ op, code, retry, from, to }) => ({ op, code, retry, from, to })),
        [{ op: "send", code: "NOT_LEADER", retry: 0, from: follower.address, to: leader.address }],
      );
      assert.deepEqual(client.pending, { inFlight: 0, waiting: 0 });

      // Not retryable: the first failure is the call's answer.
      leader.faults.push({ op: "send", kind: "error", code: "INVALID", message: "no" });
      const invalid = await rejection(client.send("bob", "refused", { timeoutMs: 2000 }));
      assert.equal((invalid as FerryError).code, "INVALID");
      assert.equal(leader.requestsOf("send").length, 2);

      // Retryable, but the backoff outlasts the deadline: TIMEOUT is not what the call says,
      // the failure is (nothing was in flight while backing off).
      leader.faults.push({ op: "send", kind: "error", code: "OVERLOADED" });
      const overloaded = await rejection(client.send("bob", "busy", { timeoutMs: 50 }));
      assert.equal((overloaded as FerryError).code, "OVERLOADED");
      assert.equal(leader.requestsOf("send").length, 3);
      assert.equal(events.at(-1)!.retry, 0);
      assert.deepEqual(client.pending, { inFlight: 0, waiting: 0 });

      // The window and the connection are still good.
      await client.send("bob", "after", { timeoutMs: 2000 });
    } finally {
      diagnostics.unsubscribe("ferry:client:retry", listen);
      await client.close();
      await Promise.all([leader.close(), follower.close()]);
    }
  });

  test("the client reconnects with backoff after the server goes away and comes back", async () => {
    const first = await FakeServer.start();
    const port = first.port;
    const client = await connect({ seeds: [first.address], ...fast });
    await client.send("bob", "before");
    await first.close();
    const pending = client.send("bob", "across the restart", { timeoutMs: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 50)); // a few refused reconnects
    const second = await FakeServer.start({ port });
    const reply = await pending;
    assert.equal(second.requestsOf("send")[0]!.id, reply.id);
    await client.close();
    await second.close();
  });

  test("a send unanswered past attemptTimeoutMs goes to the next node with the same id", async () => {
    const paused = await FakeServer.start();
    const healthy = await FakeServer.start();
    const client = await connect({ seeds: [paused.address, healthy.address], attemptTimeoutMs: 100, ...fast });
    paused.faults.push({ op: "send", kind: "ignore" });
    const reply = await client.send("bob", "not stuck");
    assert.equal(paused.requestsOf("send")[0]!.id, reply.id);
    assert.equal(healthy.requestsOf("send")[0]!.id, reply.id);
    assert.equal(client.address, healthy.address);
    await client.close();
    await Promise.all([paused.close(), healthy.close()]);
  });

  test("a request over frameBytesMax fails with TOO_LARGE and is not sent", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], frameBytesMax: 1024, ...fast });
    const error = await rejection(client.send("bob", new Uint8Array(2000)));
    assert.equal((error as FerryError).code, "TOO_LARGE");
    assert.equal(server.requestsOf("send").length, 0);
    await client.send("bob", "small is fine");
    await client.close();
    await server.close();
  });

  test("a connection lost during HELLO counts as not sent: even a receive is retried", async () => {
    const server = await FakeServer.start();
    const client = new FerryClient({ seeds: [server.address], name: "alice", ...fast });
    server.faults.push({ op: "hello", kind: "drop" });
    assert.deepEqual(await client.receive("bob"), []);
    assert.equal(server.requestsOf("hello").length, 2);
    assert.equal(server.requestsOf("receive").length, 1);
    await client.close();
    await server.close();
  });

  test("a refused HELLO fails connect with the server's error", async () => {
    const server = await FakeServer.start();
    server.faults.push({ op: "hello", kind: "error", code: "FORBIDDEN", message: "name taken" });
    const error = await rejection(connect({ seeds: [server.address], name: "mallory", ...fast }));
    assert.equal((error as FerryError).code, "FORBIDDEN");
    assert.equal((error as FerryError).message, "name taken");
    await server.close();
  });

  test("TLS: trusted certificate works; an untrusted one or a plain server is UNAVAILABLE", async () => {
    const cert = readFileSync(new URL("./fixtures/test-cert.pem", import.meta.url));
    const key = readFileSync(new URL("./fixtures/test-key.pem", import.meta.url));
    const secure = await FakeServer.start({ tls: { key, cert } });
    const client = await connect({ seeds: [secure.address], name: "tina", tls: { ca: cert }, ...fast });
    await client.send("bob", "over tls");
    const [message] = await client.receive("bob");
    assert.equal(message!.sender, "tina");
    await client.close();
    const untrusted = await rejection(connect({ seeds: [secure.address], tls: true, timeoutMs: 300, ...fast }));
    assert.equal((untrusted as FerryError).code, "UNAVAILABLE");
    assert.match((untrusted as FerryError).message, /self.signed|certificate/i);
    await secure.close();
  });

  test("connect fails with UNAVAILABLE when no seed answers", async () => {
    const error = await rejection(connect({ seeds: [`127.0.0.1:${await closedPort()}`], timeoutMs: 200, ...fast }));
    assert.ok(error instanceof FerryError);
    assert.equal(error.code, "UNAVAILABLE");
    assert.match(error.message, /cannot connect/);
  });

  test("close ends a call that is backing off between reconnects", { timeout: 5000 }, async () => {
    const client = new FerryClient({ seeds: [`127.0.0.1:${await closedPort()}`], reconnectMinMs: 60_000, reconnectMaxMs: 60_000 });
    const call = rejection(client.status({ timeoutMs: 120_000 }));
    await new Promise((resolve) => setTimeout(resolve, 50)); // refused, now in a long backoff
    await client.close();
    assert.equal(((await call) as FerryError).code, "UNAVAILABLE");
  });

  test("an idle connection is closed by the client and reopened on the next call", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], idleTimeoutMs: 50, ...fast });
    await client.send("bob", "one");
    await until(() => server.openConnections === 0, "the idle connection to close");
    await client.send("bob", "two");
    assert.equal(server.connectionsAccepted, 2);
    assert.equal(server.mailbox("bob").length, 2);
    await client.close();
    await server.close();
  });

  test("after close, waiting and new calls fail with UNAVAILABLE", async () => {
    const server = await FakeServer.start();
    const client = await connect({ seeds: [server.address], window: 1, ...fast });
    server.hold = true;
    const inFlight = rejection(client.send("bob", "in flight"));
    const waiting = rejection(client.send("bob", "waiting"));
    await until(() => server.heldCount === 1, "held request");
    await client.close();
    for (const call of [inFlight, waiting, rejection(client.status())]) {
      const error = await call;
      assert.equal((error as FerryError).code, "UNAVAILABLE");
    }
    await server.close();
  });
});
