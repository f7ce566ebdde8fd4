// FreshHeads: the heads a replica keeps of the records after each mailbox's fresh cursor. The
// broker's own use is covered by the property tests (replicas with and without heads end
// byte-identical); here the queue itself against an array model, and its bound.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Broker } from "../../src/broker/broker.js";
import { type FreshHead, FreshHeads } from "../../src/broker/fresh-heads.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { seqOf } from "../../src/broker/records.js";
import { msTimestamp } from "../../src/broker/broker.js";

function blank(): FreshHead {
  return { seq: "", id: "", hiddenUntilMs: 0, expiresAtMs: 0, senderOrdered: false, bytes: 0 };
}

test("a mailbox's heads come back as they were appended, across growth and compaction", () => {
  // Blocks of pushes, then of drops from the front: the queue grows while its front goes, so
  // both the moves to the front (slots, ids) and the doublings happen with heads in use.
  const push = fc.record({
    op: fc.constant("push" as const),
    id: fc.stringMatching(/^[!-~]{1,80}$/),
    hidden: fc.constantFrom(0, 1795000000123),
    expires: fc.constantFrom(0, 1795000009999.5),
    senderOrdered: fc.boolean(),
    bytes: fc.integer({ min: 0, max: 1 << 20 }),
  });
  const block = fc
    .tuple(
      fc.array(push, { maxLength: 40 }),
      fc.oneof(fc.record({ op: fc.constant("shift" as const), count: fc.integer({ min: 0, max: 12 }) }), fc.record({ op: fc.constant("passed" as const), back: fc.integer({ min: 0, max: 12 }) })),
    )
    .map(([pushes, drop]) => [...pushes, drop]);
  const operation = fc.array(block, { maxLength: 12 }).map((blocks) => blocks.flat());
  fc.assert(
    fc.property(operation, (operations) => {
      const heads = new FreshHeads(Number.POSITIVE_INFINITY);
      heads.reset("m");
      const queue = heads.of("m")!;
      const model: FreshHead[] = [];
      let next = 0;
      for (const operation of operations) {
        if (operation.op === "push") {
          const seq = seqOf(1_000_000 + Math.floor(next / 3), (next % 3) * 1000);
          next++;
          heads.append("m", seq, operation.id, operation.hidden, operation.expires, operation.senderOrdered, operation.bytes);
          model.push({ seq, id: operation.id, hiddenUntilMs: operation.hidden, expiresAtMs: operation.expires, senderOrdered: operation.senderOrdered, bytes: operation.bytes });
        } else if (operation.op === "shift") {
          for (let i = 0; i < operation.count && model.length > 0; i++) {
            queue.shift();
            model.shift();
          }
        } else {
          // The cursor at (or just before, or before all of) a head still held.
          const cursor = model.length === 0 ? "" : operation.back === 0 ? "" : model[Math.min(model.length, operation.back) - 1]!.seq;
          heads.passed(queue, cursor);
          while (model.length > 0 && cursor !== "" && model[0]!.seq <= cursor) model.shift();
        }
        assert.equal(queue.size, model.length);
        assert.equal(heads.size, model.length);
        const first = blank();
        assert.equal(queue.peek(first), model.length > 0);
        if (model.length > 0) assert.deepEqual(first, model[0]);
      }
      // Everything still held, in order.
      for (const expected of model) {
        const head = blank();
        assert.ok(queue.peek(head));
        assert.deepEqual(head, expected);
        queue.shift();
      }
      assert.equal(heads.size, 0);
    }),
    { numRuns: 200 },
  );
});

test("the heads are bounded: a mailbox that would pass the bound loses its heads, and its RECEIVEs read the records", () => {
  const send = (i: number) => ({ op: "send" as const, sender: "s", recipients: [i % 2 === 0 ? "a" : "b"], body: new Uint8Array([i]), id: `id-${i}` });
  const follower = new Broker(new MemoryKv(), { freshHeadsInMemoryMax: 5 });
  const leader = new Broker(new MemoryKv(), { freshHeadsInMemoryMax: 5 });
  const start = 1_795_000_000_000;
  // A follower keeps heads (4 for a, 3 for b would pass 5: b's third is not kept, b's heads go).
  const sends = Array.from({ length: 7 }, (_, i) => send(i));
  follower.apply(1, msTimestamp(start), sends, false);
  leader.apply(1, msTimestamp(start), sends, true);
  assert.equal(follower.freshHeadsInMemory(), 4);
  assert.equal(leader.freshHeadsInMemory(), 0, "a leader scans: it keeps no heads");
  const receives = [
    { op: "receive" as const, mailbox: "a", max: 3 },
    { op: "receive" as const, mailbox: "b", max: 2 },
  ];
  follower.apply(2, msTimestamp(start + 1), receives, false);
  const replies = leader.apply(2, msTimestamp(start + 1), receives, true);
  assert.deepEqual(
    replies.map((reply) => (reply.ok && "messages" in reply ? reply.messages.map((message) => message.id) : reply)),
    [
      ["id-0", "id-2", "id-4"],
      ["id-1", "id-3"],
    ],
  );
  assert.equal(follower.freshHeadsInMemory(), 1, "a's last head; b's were dropped");
  // b's scan reached its last record on the next RECEIVE: its heads are known again (none), and new ones are kept.
  const more = [{ op: "receive" as const, mailbox: "b", max: 5 }, send(7), send(9)];
  follower.apply(3, msTimestamp(start + 2), more, false);
  leader.apply(3, msTimestamp(start + 2), more, true);
  assert.equal(follower.freshHeadsInMemory(), 3);
  // Both hold the same state: the same messages leased, the same left.
  const list = (broker: Broker, mailbox: string) => {
    const reply = broker.list({ op: "list", mailbox }, msTimestamp(start + 3));
    assert.ok(reply.ok);
    return reply.items.map((item) => [item.id, item.state, item.deliveries]);
  };
  for (const mailbox of ["a", "b"]) assert.deepEqual(list(follower, mailbox), list(leader, mailbox));
});
