// consume(): auto ack after the loop body, explicit ack and nack, early exit gives messages back.
import assert from "node:assert/strict";
import { Socket } from "node:net";
import { test } from "node:test";
import { CONSUME_ACK_HOLD_MS, type ConsumeOptions, connect } from "../../src/client/index.js";
import { FakeServer, type Fault } from "./fake-server.js";

const fast = { reconnectMinMs: 5, reconnectMaxMs: 20 };
const text = (body: Uint8Array) => new TextDecoder().decode(body);

// The ids acknowledged, by ACKs and by RECEIVEs that carried acks, in the order the server saw them.
function ackedIds(server: FakeServer): unknown[] {
  return server.requests.flatMap((request) => (request.op === "ack" ? (request.ids as unknown[]) : request.op === "receive" ? ((request.ack as unknown[] | undefined) ?? []) : []));
}

// Counts the RECEIVE calls consume() makes (the fake server sees them a little later).
function countReceives(client: Awaited<ReturnType<typeof connect>>): { count: number; restore(): void } {
  const receiveBatch = client.receiveBatch;
  const counter = {
    count: 0,
    restore: () => {
      client.receiveBatch = receiveBatch;
    },
  };
  client.receiveBatch = (...args: Parameters<typeof client.receiveBatch>) => {
    counter.count++;
    return receiveBatch.apply(client, args);
  };
  return counter;
}

// The RECEIVE and ACK requests the server saw, in order, with the ids they acknowledged.
function receivesAndAcks(server: FakeServer): Array<[string, unknown]> {
  return server.requests.filter((request) => request.op === "receive" || request.op === "ack").map((request) => [String(request.op), request.op === "ack" ? request.ids : request.ack]);
}

// Sends these bodies to the mailbox, one after the other; resolves with their ids.
async function sendAll(client: Awaited<ReturnType<typeof connect>>, mailbox: string, bodies: string[]): Promise<string[]> {
  const ids: string[] = [];
  for (const body of bodies) ids.push((await client.send(mailbox, body)).id);
  return ids;
}

// Consumes `count` messages with these options (auto-acked), then ends the loop.
async function consumeCount(client: Awaited<ReturnType<typeof connect>>, mailbox: string, count: number, options: ConsumeOptions): Promise<void> {
  const controller = new AbortController();
  let seen = 0;
  for await (const _message of client.consume(mailbox, { ...options, signal: controller.signal })) {
    if (++seen === count) controller.abort();
  }
}

async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(condition(), "the condition came true");
}

async function setup() {
  const server = await FakeServer.start();
  const client = await connect({ seeds: [server.address], ...fast });
  return { server, client };
}

test("autoAck acks each message after its loop body; abort ends the loop quietly", async () => {
  const { server, client } = await setup();
  for (const body of ["one", "two", "three"]) await client.send("jobs", body);
  const controller = new AbortController();
  const seen: string[] = [];
  for await (const message of client.consume("jobs", { max: 2, waitMs: 50, signal: controller.signal })) {
    // While the body runs, its message is not acked yet.
    assert.ok(server.mailbox("jobs").some((stored) => stored.id === message.id));
    seen.push(text(message.body));
    if (seen.length === 3) controller.abort();
  }
  assert.deepEqual(seen, ["one", "two", "three"]);
  assert.equal(ackedIds(server).length, 3);
  assert.equal(server.mailbox("jobs").length, 0);
  await client.close();
  await server.close();
});

test("the acks of a batch handled without waiting go out as one ACK request; explicit acks settle with it", async () => {
  const { server, client } = await setup();
  for (let i = 0; i < 5; i++) await client.send("jobs", `job ${i}`);
  const controller = new AbortController();
  const explicit: Array<Promise<void>> = [];
  let seen = 0;
  for await (const message of client.consume("jobs", { max: 5, waitMs: 50, prefetch: false, signal: controller.signal })) {
    if (seen % 2 === 0) explicit.push(message.ack()); // not awaited: coalesced with the auto-acks
    if (++seen === 5) controller.abort();
  }
  await Promise.all(explicit);
  assert.equal(server.requestsOf("ack").length, 1);
  assert.equal(ackedIds(server).length, 5);
  assert.equal(server.mailbox("jobs").length, 0);
  await client.close();
  await server.close();
});

test("the acks collected ride on the next RECEIVE: one request acknowledges a batch and leases the next", async () => {
  const { server, client } = await setup();
  const ids = await sendAll(client, "jobs", ["one", "two", "three"]);
  await consumeCount(client, "jobs", 3, { max: 1, waitMs: 50, prefetch: false });
  // The last one's ack goes out as an ACK when the loop ends.
  assert.deepEqual(receivesAndAcks(server), [
    ["receive", undefined],
    ["receive", [ids[0]]],
    ["receive", [ids[1]]],
    ["ack", [ids[2]]],
  ]);
  assert.deepEqual(server.mailbox("jobs"), []);
  await client.close();
  await server.close();
});

test("with batches prefetched, a batch's acks ride on the RECEIVE that goes out once it is handed out", async () => {
  const { server, client } = await setup();
  const ids = await sendAll(client, "jobs", ["job 0", "job 1", "job 2", "job 3", "job 4", "job 5"]);
  await consumeCount(client, "jobs", 6, { max: 2, waitMs: 50, prefetch: 1 });
  assert.deepEqual(receivesAndAcks(server), [
    ["receive", undefined], // [0, 1]
    ["receive", undefined], // [2, 3], the prefetch, before 0 is handed out
    ["receive", [ids[0], ids[1]]], // [4, 5], once [0, 1] is handed out
    ["receive", [ids[2], ids[3]]], // once [2, 3] is: empty, answered at once
    ["ack", [ids[4], ids[5]]], // the loop ends
  ]);
  assert.deepEqual(server.mailbox("jobs"), []);
  await client.close();
  await server.close();
});

test("a consumer never has more than (prefetch + 1) x max messages leased and not acked", async () => {
  const { server, client } = await setup();
  for (let i = 0; i < 200; i++) await client.send("bound", `job ${i}`);
  const controller = new AbortController();
  let seen = 0;
  let leasedMax = 0;
  for await (const _message of client.consume("bound", { max: 10, prefetch: 3, waitMs: 50, signal: controller.signal })) {
    leasedMax = Math.max(leasedMax, server.mailbox("bound").filter((stored) => stored.leased).length);
    if (++seen === 200) controller.abort();
    if (seen % 7 === 0) await new Promise((resolve) => setTimeout(resolve, 1)); // a body that waits now and then
  }
  assert.ok(leasedMax <= 40, `${leasedMax} leased at once`);
  assert.ok(leasedMax > 30, `${leasedMax} leased at most: the prefetch is not used`);
  assert.deepEqual(server.mailbox("bound"), []);
  await client.close();
  await server.close();
});

test("acks held for a RECEIVE that does not come within CONSUME_ACK_HOLD_MS go out as an ACK", async () => {
  const { server, client } = await setup();
  const ids = await sendAll(client, "slow", ["job 0", "job 1", "job 2", "job 3"]);
  // The prefetched batch [2, 3] takes long to come: [0, 1]'s acks cannot wait for its refill.
  let receives = 0;
  server.delayMs = (request) => (request.op === "receive" && ++receives === 2 ? 10 * CONSUME_ACK_HOLD_MS : 0);
  const controller = new AbortController();
  const acks: Array<Promise<void>> = [];
  for await (const message of client.consume("slow", { max: 2, waitMs: 50, prefetch: 1, autoAck: false, signal: controller.signal })) {
    acks.push(message.ack());
    if (acks.length === 2) {
      const startedMs = performance.now();
      await Promise.all(acks); // settled by the ACK, long before the slow RECEIVE answers
      assert.ok(performance.now() - startedMs < 8 * CONSUME_ACK_HOLD_MS);
      assert.deepEqual(receivesAndAcks(server).at(-1), ["ack", [ids[0], ids[1]]]);
    }
    if (acks.length === 4) controller.abort();
  }
  await Promise.all(acks);
  assert.deepEqual(server.mailbox("slow"), []);
  await client.close();
  await server.close();
});

test("a node that ignores RECEIVE's acks (older than the client) still gets them, as an ACK", async () => {
  const { server, client } = await setup();
  server.ignoresReceiveAcks = true;
  const ids = await sendAll(client, "old", ["one", "two", "three"]);
  await consumeCount(client, "old", 3, { max: 1, waitMs: 50, prefetch: false });
  assert.deepEqual(server.mailbox("old"), []); // nothing left leased: every ack arrived
  assert.deepEqual(
    server.requestsOf("ack").flatMap((request) => request.ids as unknown[]),
    ids,
  );
  const batch = await client.receiveBatch("old", { ack: ["not-leased"] });
  assert.deepEqual(batch, { messages: [], acked: 0 });
  await client.close();
  await server.close();
});

test("a batch whose every message was acked in one go rides on the next RECEIVE as its lease name; one with a message nacked goes by ids", async () => {
  const { server, client } = await setup();
  server.namesLeases = true;
  const ids = await sendAll(client, "named", ["a0", "a1", "b0", "b1", "c0", "d0"]);
  const controller = new AbortController();
  let seen = 0;
  // Batches of 2: [a0 a1], [b0 b1] with b1 nacked on its first delivery, [b1 c0], [d0].
  for await (const message of client.consume("named", { max: 2, waitMs: 50, prefetch: false, autoAck: false, signal: controller.signal })) {
    if (message.id === ids[3] && message.deliveries === 1) await message.nack();
    else void message.ack();
    if (++seen === 7) controller.abort();
  }
  await waitUntil(() => server.mailbox("named").length === 0);
  const byName = server.requestsOf("receive").filter((request) => request.ackLeases !== undefined);
  assert.deepEqual(
    byName.map((request) => [(request.ackLeases as unknown[]).length, request.ack]),
    [
      [1, undefined],
      [1, undefined],
    ],
    "the two batches acked whole went by name, without ids",
  );
  assert.deepEqual(ackedIds(server), [ids[2], ids[5]], "the nacked batch's other message went by id, as did the last (an ACK as the loop ended)");
  await client.close();
  await server.close();
});

test("lease names a node ignores (older than them) go out again as an ACK of their batch's ids", async () => {
  const { server, client } = await setup();
  server.namesLeases = true;
  server.ignoresLeaseAcks = true;
  const ids = await sendAll(client, "moved", ["one", "two", "three", "four"]);
  await consumeCount(client, "moved", 4, { max: 2, waitMs: 50, prefetch: false });
  assert.ok(
    server.requestsOf("receive").some((request) => request.ackLeases !== undefined),
    "a batch went by name",
  );
  assert.deepEqual(server.mailbox("moved"), [], "nothing left leased: every ack arrived");
  assert.deepEqual(
    server.requestsOf("ack").flatMap((request) => request.ids as unknown[]).sort(),
    [...ids].sort(),
    "the named batch's ids went as an ACK, the last batch's when the loop ended",
  );
  await client.close();
  await server.close();
});

test("prefetch: after a full batch the next RECEIVEs go out before the body runs; leaving gives the prefetched batches back", async () => {
  const { server, client } = await setup();
  for (const [prefetch, expected] of [
    [undefined, [4, 4, 5]], // the default, 3 batches ahead: [2, 3], [4] and [] were asked for before job 0 was handed out
    [2, [3, 3, 4]], // [2, 3] and [4]
    [1, [2, 2, 3]], // [2, 3] only
  ] as const) {
    for (let i = 0; i < 5; i++) await client.send("jobs", `job ${i}`);
    const receives = countReceives(client);
    const receivesWhenSeen: number[] = [];
    for await (const message of client.consume("jobs", { max: 2, waitMs: 50, ...(prefetch === undefined ? {} : { prefetch }) })) {
      receivesWhenSeen.push(receives.count);
      if (text(message.body) === "job 2") {
        await message.ack();
        break;
      }
    }
    receives.restore();
    assert.deepEqual(receivesWhenSeen, expected, `prefetch ${prefetch}`);
    // 0, 1 auto-acked, 2 acked; 3 (the batch's rest) and 4 (prefetched) are ready again at once.
    assert.deepEqual(
      server.mailbox("jobs").map((stored) => [text(stored.body), stored.leased]),
      [
        ["job 3", false],
        ["job 4", false],
      ],
    );
    await client.purge("jobs");
  }
  await assert.rejects(consumeOnce(client, { prefetch: 17 }), /prefetch takes/);
  await client.close();
  await server.close();
});

async function consumeOnce(client: Awaited<ReturnType<typeof connect>>, options: Record<string, unknown>): Promise<void> {
  for await (const _message of client.consume("jobs", { waitMs: 10, ...options })) break;
}

test("aborting gives back what the prefetched RECEIVEs lease, also when the client is closed right after", async () => {
  const { server, client } = await setup();
  for (let i = 0; i < 6; i++) await client.send("jobs", `job ${i}`);
  const controller = new AbortController();
  const seen: string[] = [];
  // Batch [0, 1] is full: [2, 3] and [4, 5] are asked for before job 0 is handed out, then the
  // loop is aborted while they are on their way.
  for await (const message of client.consume("jobs", { max: 2, waitMs: 50, visibilityMs: 60_000, signal: controller.signal })) {
    seen.push(text(message.body));
    controller.abort();
  }
  assert.deepEqual(seen, ["job 0"]);
  // Closed right after the loop, as programs do: the loop waited for the prefetched batches.
  await client.close();
  // Job 0 was auto-acked; everything else is ready again, not leased for 60 s.
  assert.deepEqual(server.mailbox("jobs").map((stored) => [text(stored.body), stored.leased]), [
    ["job 1", false],
    ["job 2", false],
    ["job 3", false],
    ["job 4", false],
    ["job 5", false],
  ]);
  await server.close();
});

test("prefetch: the next RECEIVEs are written to the socket before a body that never waits runs", async () => {
  const { server, client } = await setup();
  for (let i = 0; i < 4; i++) await client.send("jobs", `job ${i}`);
  // What leaves the client, in order with what the loop body sees: RECEIVE frames carry the
  // operation's name as a string ("receive"), so a write's count of it is its RECEIVE requests.
  const events: string[] = [];
  const write = Socket.prototype.write;
  Socket.prototype.write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
    if (chunk instanceof Uint8Array) {
      const receives = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1").split("receive").length - 1;
      if (receives > 0) events.push(`write ${receives} receive`);
    }
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof Socket.prototype.write;
  try {
    for await (const message of client.consume("jobs", { max: 2, waitMs: 50, prefetch: 1 })) {
      // A body that does all its work at once, as most do: without a prefetch already on its way,
      // the next round trip would only begin after the whole batch was handled.
      events.push(`body ${text(message.body)}`);
      if (text(message.body) === "job 3") break;
    }
  } finally {
    Socket.prototype.write = write;
  }
  assert.deepEqual(events, ["write 1 receive", "write 1 receive", "body job 0", "body job 1", "write 1 receive", "body job 2", "body job 3"]);
  await client.close();
  await server.close();
});

test("prefetch false: only the batch in hand is leased when the body runs", async () => {
  const { server, client } = await setup();
  for (let i = 0; i < 2; i++) await client.send("jobs", `job ${i}`);
  const receives = countReceives(client);
  const counts: number[] = [];
  for await (const message of client.consume("jobs", { max: 1, waitMs: 50, prefetch: false })) {
    counts.push(receives.count);
    if (counts.length === 2) {
      await message.ack();
      break;
    }
  }
  assert.deepEqual(counts, [1, 2]);
  assert.deepEqual(
    server.mailbox("jobs").map((stored) => [text(stored.body), stored.leased]),
    [],
  );
  await client.close();
  await server.close();
});

test("explicit ack and nack with autoAck off; nacked messages come back", async () => {
  const { server, client } = await setup();
  await client.send("jobs", "keep");
  await client.send("jobs", "retry");
  const controller = new AbortController();
  const deliveries: Array<[string, number]> = [];
  for await (const message of client.consume("jobs", { autoAck: false, max: 1, waitMs: 50, signal: controller.signal })) {
    deliveries.push([text(message.body), message.deliveries]);
    if (text(message.body) === "keep") await message.ack();
    else if (message.deliveries === 1) await message.nack();
    else {
      await message.ack();
      controller.abort();
    }
  }
  assert.deepEqual(deliveries, [
    ["keep", 1],
    ["retry", 1],
    ["retry", 2],
  ]);
  assert.equal(server.mailbox("jobs").length, 0);
  await client.close();
  await server.close();
});

test("leaving the loop early nacks the message in hand and the rest of the batch", async () => {
  const { server, client } = await setup();
  for (const body of ["a", "b", "c"]) await client.send("jobs", body);
  await assert.rejects(async () => {
    for await (const message of client.consume("jobs", { max: 3, waitMs: 50 })) {
      if (text(message.body) === "b") throw new Error("handler failed");
    }
  }, /handler failed/);
  // "a" was acked after its body; "b" (failed) and "c" (never seen) are ready again.
  const states = server.mailbox("jobs").map((stored) => [text(stored.body), stored.leased]);
  assert.deepEqual(states, [
    ["b", false],
    ["c", false],
  ]);
  // Acked explicitly before break: not given back.
  for await (const message of client.consume("jobs", { max: 3, waitMs: 50 })) {
    await message.ack();
    break;
  }
  assert.deepEqual(
    server.mailbox("jobs").map((stored) => [text(stored.body), stored.leased]),
    [["c", false]],
  );
  await client.close();
  await server.close();
});

test("consume rides over a retryable RECEIVE failure", async () => {
  const { server, client } = await setup();
  await client.send("jobs", "eventually");
  server.faults.push({ op: "receive", kind: "error", code: "TIMEOUT" });
  for await (const message of client.consume("jobs", { waitMs: 50 })) {
    assert.equal(text(message.body), "eventually");
    await message.ack();
    break;
  }
  assert.equal(server.requestsOf("receive").length, 2);
  await client.close();
  await server.close();
});

test("a failed auto-ack: retryable ones are absorbed, others end the loop with the error", async () => {
  const { server, client } = await setup();
  for (const body of ["first", "second"]) await client.send("jobs", body);
  // The first request that carries acks (a RECEIVE, or an ACK once they waited long enough for
  // one) fails retryably, the second for good.
  const faults: Fault[] = [
    { kind: "error", code: "TIMEOUT" },
    { kind: "error", code: "FORBIDDEN", message: "not yours" },
  ];
  server.faultFor = (request) => (request.op === "ack" || (request.op === "receive" && request.ack !== undefined) ? faults.shift() : undefined);
  const seen: string[] = [];
  await assert.rejects(
    async () => {
      for await (const message of client.consume("jobs", { max: 1, waitMs: 50 })) seen.push(text(message.body));
    },
    (error: Error & { code?: string }) => error.code === "FORBIDDEN",
  );
  assert.deepEqual(seen, ["first", "second"]);
  await client.close();
  await server.close();
});

test("an idle consumer pauses between empty batches instead of spinning", async () => {
  const { server, client } = await setup();
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 350);
  for await (const _message of client.consume("idle", { waitMs: 0, signal: stop.signal })) assert.fail("nothing was sent");
  // With no pause this would be thousands of RECEIVEs in 350 ms.
  assert.ok(server.requestsOf("receive").length <= 10, `${server.requestsOf("receive").length} receives`);
  await client.close();
  await server.close();
});

test("a consumed message shows its fields only; ack works detached; explicit acks of one turn share one ACK request", async () => {
  const { server, client } = await setup();
  for (const body of ["a", "b", "c"]) await client.send("shown", body);
  const controller = new AbortController();
  const acks: Array<Promise<void>> = [];
  let keys: string[] | undefined;
  let shown: Record<string, unknown> | undefined;
  for await (const message of client.consume("shown", { max: 3, waitMs: 50, autoAck: false, signal: controller.signal })) {
    keys ??= Object.keys(message).sort();
    shown ??= JSON.parse(JSON.stringify(message, (_key, value) => (typeof value === "bigint" ? String(value) : value)));
    const { ack } = message; // destructured, as in `for await (const { body, ack } of ...)`
    acks.push(ack());
    if (acks.length === 3) controller.abort();
  }
  const fields = ["body", "deliveries", "id", "recipient", "sender", "timestamp"];
  assert.deepEqual(keys, fields, "headers and senderTime only when present");
  assert.deepEqual(Object.keys(shown!).sort(), fields);
  await Promise.all(acks);
  assert.equal(server.requestsOf("ack").length, 1, "the three acks went out as one request");
  assert.equal(server.mailbox("shown").length, 0);
  await client.close();
  await server.close();
});
