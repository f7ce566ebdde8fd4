// Acking a batch by its lease name (ReceiveCommand.ackLeases): a RECEIVE's answer names its
// batch; a later RECEIVE that carries the name acks what an ACK of the batch's ids would. The
// model-based properties (properties.test.ts) hold the general case; these are the cases by name.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Broker, type BrokerCommand, msTimestamp } from "../../src/broker/broker.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { mailboxPrefix, PENDING } from "../../src/broker/records.js";
import type { ReceiveReply } from "../../src/protocol/api.js";
import { formatLeaseName, parseLeaseName } from "../../src/protocol/leases.js";
import { dump, Harness, read } from "./harness.js";

const pendingKeys = (h: Harness, mailbox: string): number => {
  const prefix = mailboxPrefix(PENDING, mailbox);
  return dump(h.kv).filter(([key]) => key.startsWith(prefix)).length;
};

function receiveAcking(h: Harness, mailbox: string, ackLeases: string[], extra: Partial<BrokerCommand & { op: "receive" }> = {}): ReceiveReply {
  const result = h.one({ op: "receive", mailbox, max: 10, ackLeases, ...extra });
  assert.ok(result.ok, `receive failed: ${result.ok ? "" : result.code}`);
  return result as ReceiveReply;
}

function sendAll(h: Harness, mailbox: string, count: number): void {
  for (let i = 0; i < count; i++) h.send(mailbox, `m${i}`);
}

describe("lease names", () => {
  test("parse what formatLeaseName makes, and nothing else", () => {
    assert.deepEqual(parseLeaseName(formatLeaseName(12, 3, 1_764_000_000_000)), { index: 12, number: 3, visibleAtMs: 1_764_000_000_000 });
    assert.deepEqual(parseLeaseName("1.0.0"), { index: 1, number: 0, visibleAtMs: 0 });
    for (const bad of ["", "1.0", "1.0.0.0", "0.0.5", "01.0.5", "1.-1.5", "1.2147483648.5", "1.0.9007199254740993", "a.b.c", "1..5", " 1.0.5", 5, null]) {
      assert.equal(parseLeaseName(bad), undefined, `${JSON.stringify(bad)} is not a lease name`);
    }
  });
});

describe("acking a batch by its lease name", () => {
  test("a RECEIVE names its batch's lease; a later one acks the batch by that name, and its key goes", () => {
    const h = new Harness();
    sendAll(h, "q", 5);
    const first = h.receive("q", 3, 10_000);
    assert.equal(first.lease, formatLeaseName(h.index, 0, h.nowMs + 10_000), "entry, batch number, lease end");
    assert.equal(pendingKeys(h, "q"), 1);
    const second = receiveAcking(h, "q", [first.lease!]);
    assert.deepEqual([second.acked, second.ackedLeases], [3, 1]);
    assert.deepEqual(
      second.messages.map((m) => read(m.body)),
      ["m3", "m4"],
    );
    assert.equal(pendingKeys(h, "q"), 1, "the acked batch's key went; the new batch has one");
    assert.deepEqual(
      h.list("q").items.map((item) => item.state),
      ["leased", "leased"],
    );
    const third = receiveAcking(h, "q", [second.lease!, first.lease!]);
    assert.deepEqual([third.acked, third.ackedLeases, third.messages.length, third.lease], [2, 2, 0, undefined], "a name acked before acks nothing");
    assert.equal(h.list("q").items.length, 0);
    assert.equal(pendingKeys(h, "q"), 0);
  });

  test("as an ACK of the batch's ids: a message nacked is not acked by the name and its key stays; one extended is acked", () => {
    const h = new Harness();
    sendAll(h, "q", 3);
    const batch = h.receive("q", 3, 10_000);
    const [a, b] = batch.messages.map((m) => m.id);
    h.one({ op: "nack", mailbox: "q", ids: [a!] });
    h.one({ op: "extend", mailbox: "q", ids: [b!], visibilityMs: 60_000 });
    const reply = receiveAcking(h, "q", [batch.lease!], { max: 1, visibilityMs: 10_000 });
    assert.equal(reply.acked, 2, "the extended one and the untouched one");
    assert.deepEqual(
      reply.messages.map((m) => [m.id, m.deliveries]),
      [[a, 2]],
      "the nacked one is leased again",
    );
    const again = receiveAcking(h, "q", [batch.lease!]);
    assert.equal(again.acked, 1, "the key stayed (not all of it was acked): it lists the message leased again, which an ACK of the ids acks too");
    assert.equal(h.list("q").items.length, 0);
  });

  test("a lease that ended acks nothing: its messages come back", () => {
    const h = new Harness();
    sendAll(h, "q", 2);
    const batch = h.receive("q", 2, 1000);
    h.advance(1000);
    const reply = receiveAcking(h, "q", [batch.lease!]);
    assert.equal(reply.acked, 0);
    assert.deepEqual(
      reply.messages.map((m) => m.deliveries),
      [2, 2],
    );
  });

  test("a name names a batch of its own mailbox only; one never answered acks nothing", () => {
    const h = new Harness();
    sendAll(h, "q", 2);
    sendAll(h, "r", 2);
    const batch = h.receive("q", 2, 10_000);
    assert.equal(receiveAcking(h, "r", [batch.lease!], { max: 1 }).acked, 0);
    assert.equal(receiveAcking(h, "q", [formatLeaseName(h.index, 0, h.nowMs + 10_000)], { max: 1 }).acked, 0);
    assert.equal(h.list("q").items.filter((item) => item.state === "leased").length, 2);
  });

  test("ids and names together: ids first, then the names; acked counts both", () => {
    const h = new Harness();
    sendAll(h, "q", 4);
    const first = h.receive("q", 2, 10_000);
    const second = h.receive("q", 2, 10_000);
    const reply = receiveAcking(h, "q", [first.lease!], { ack: [second.messages[0]!.id] });
    assert.deepEqual([reply.acked, reply.ackedLeases], [3, 1]);
    assert.deepEqual(
      h.list("q").items.map((item) => item.id),
      [second.messages[1]!.id],
    );
  });

  test("malformed names are INVALID and too many TOO_LARGE; nothing changes", () => {
    const h = new Harness({ idsPerRequestMax: 3 });
    sendAll(h, "q", 2);
    const batch = h.receive("q", 2, 10_000);
    const before = dump(h.kv).filter(([key]) => key !== "\x00a");
    const cases: Array<[BrokerCommand, string]> = [
      [{ op: "receive", mailbox: "q", max: 1, ackLeases: [] }, "INVALID"],
      [{ op: "receive", mailbox: "q", max: 1, ackLeases: [batch.lease!, "nope"] }, "INVALID"],
      [{ op: "receive", mailbox: "q", max: 1, ackLeases: [batch.lease!, "1.0.5"], ack: ["a", "b"] }, "TOO_LARGE"],
    ];
    for (const [command, code] of cases) {
      const result = h.one(command);
      assert.equal(result.ok ? "ok" : result.code, code, JSON.stringify(command));
    }
    assert.deepEqual(
      dump(h.kv).filter(([key]) => key !== "\x00a"),
      before,
    );
  });

  test("a replica's apply names no lease and ends in the leader's state", () => {
    const leader = new Broker(new MemoryKv());
    const replicaKv = new MemoryKv();
    const replica = new Broker(replicaKv);
    let index = 0;
    const both = (command: BrokerCommand) => {
      index++;
      const timestamp = msTimestamp(1_000_000 + index);
      replica.apply(index, timestamp, [command], false);
      return leader.apply(index, timestamp, [command])[0] as ReceiveReply;
    };
    for (let i = 0; i < 4; i++) both({ op: "send", sender: "s", recipients: ["q"], body: new Uint8Array([i]) });
    const first = both({ op: "receive", mailbox: "q", max: 2 });
    index++;
    const quiet = replica.apply(index, msTimestamp(1_000_000 + index), [{ op: "receive", mailbox: "q", max: 2, ackLeases: [first.lease!] }], false)[0] as ReceiveReply;
    const loud = leader.apply(index, msTimestamp(1_000_000 + index), [{ op: "receive", mailbox: "q", max: 2, ackLeases: [first.lease!] }])[0] as ReceiveReply;
    assert.equal(quiet.lease, undefined);
    assert.equal(typeof loud.lease, "string");
    assert.deepEqual([quiet.acked, loud.acked], [2, 2]);
    assert.deepEqual(dump(replicaKv), dump((leader as unknown as { kv: MemoryKv }).kv));
  });

  test("leaseIds lists the ids a name's batch leased, as the store has them now", () => {
    const h = new Harness();
    sendAll(h, "q", 3);
    const batch = h.receive("q", 3, 10_000);
    assert.deepEqual(
      h.broker.leaseIds("q", [batch.lease!, "1.0.5", "not a name"]),
      batch.messages.map((m) => m.id),
    );
    receiveAcking(h, "q", [batch.lease!]);
    assert.deepEqual(h.broker.leaseIds("q", [batch.lease!]), []);
  });
});
