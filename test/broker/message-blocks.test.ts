// Message records in blocks (src/broker/message-blocks.ts): what the store holds as messages come
// and go. The broker's behaviour with blocks is the property tests' (properties.test.ts, blocks of
// 1-3 messages there); these pin the layout the design promises.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Broker, type BrokerCommand, msTimestamp } from "../../src/broker/broker.js";
import { type OrderedKv, prefixEnd } from "../../src/broker/kv.js";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";
import { MESSAGE, REMOVED } from "../../src/broker/records.js";
import { Harness, text } from "./harness.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const sends = (mailbox: string, count: number, body = "x".repeat(200)): BrokerCommand[] =>
  Array.from({ length: count }, () => ({ op: "send" as const, sender: "alice", recipients: [mailbox], body: text(body) }));

const keys = (kv: OrderedKv, prefix: string): string[] => kv.scan(prefix, prefixEnd(prefix), Number.POSITIVE_INFINITY).map((entry) => entry.key);

function ids(h: Harness, mailbox: string, max: number): string[] {
  return h.receive(mailbox, max).messages.map((message) => message.id);
}

describe("message blocks", () => {
  test("one entry's messages to a mailbox are one record; acked, a bitmap marks the removed, and the last ack removes both", () => {
    const h = new Harness();
    h.apply(...sends("a", 100), ...sends("b", 3));
    assert.deepEqual(keys(h.kv, MESSAGE).length, 2, "a block per mailbox");
    const leased = ids(h, "a", 60);
    h.one({ op: "ack", mailbox: "a", ids: leased.slice(0, 50) });
    assert.equal(keys(h.kv, REMOVED).length, 1, "the partly removed block has a bitmap");
    assert.equal(h.receive("a", 100).messages.length, 40, "the 40 never leased; the 10 leased stay leased");
    h.one({ op: "ack", mailbox: "a", ids: leased.slice(50) });
    h.nowMs += 60_000;
    const rest = ids(h, "a", 100);
    assert.equal(rest.length, 40, "the 40 leased by the second RECEIVE, come back");
    h.one({ op: "ack", mailbox: "a", ids: rest });
    assert.deepEqual(
      keys(h.kv, MESSAGE).map((key) => key.slice(1, 3)),
      ["b\x00"],
      "a's block went with its last message",
    );
    assert.deepEqual(keys(h.kv, REMOVED), [], "and its bitmap too");
  });

  test("a mailbox's messages of one entry take several blocks past messageBlockBytesMax; a larger message has one of its own", () => {
    const h = new Harness({ messageBlockBytesMax: 1000 });
    h.apply(...sends("a", 20), ...sends("a", 1, "y".repeat(5000)), ...sends("a", 2));
    const blocks = keys(h.kv, MESSAGE);
    assert.ok(blocks.length >= 6, `${blocks.length} blocks of at most ~4 records of ~250 bytes`);
    const list = h.list("a", 100);
    assert.equal(list.items.length, 23, "LIST walks every block in order");
    const got = h.receive("a", 100).messages;
    assert.equal(got.length, 23);
    assert.equal(got[20]!.body.length, 5000, "the large one in order");
    assert.deepEqual(
      got.map((message) => message.id),
      list.items.map((item) => item.id),
    );
  });

  test("an entry's first block stays while its further blocks do, and goes with the last of them", () => {
    const h = new Harness({ messageBlockBytesMax: 1000 });
    h.apply(...sends("a", 12)); // blocks of 4, 4 and 4 records of ~250 bytes
    const blocks = keys(h.kv, MESSAGE);
    assert.equal(blocks.length, 3);
    assert.ok(blocks[0]!.endsWith("\x00\x00\x00\x00"), "the first block is keyed by its entry");
    const all = ids(h, "a", 12);
    h.one({ op: "ack", mailbox: "a", ids: all.slice(0, 4) });
    assert.equal(keys(h.kv, MESSAGE).length, 3, "the first block, all of it acked, stays for the further ones");
    assert.deepEqual(keys(h.kv, REMOVED), [blocks[0]!.replace(MESSAGE, REMOVED)], "with a full bitmap");
    h.one({ op: "ack", mailbox: "a", ids: all.slice(8) });
    assert.deepEqual(keys(h.kv, MESSAGE), blocks.slice(0, 2));
    // Still found through the first block: NACK the middle ones and LIST them.
    h.one({ op: "nack", mailbox: "a", ids: all.slice(4, 8) });
    assert.deepEqual(
      h.list("a", 10).items.map((item) => item.id),
      all.slice(4, 8),
    );
    const again = ids(h, "a", 10);
    assert.deepEqual(again, all.slice(4, 8));
    h.one({ op: "ack", mailbox: "a", ids: again });
    assert.deepEqual(keys(h.kv, MESSAGE), [], "the last further block took the first with it");
    assert.deepEqual(keys(h.kv, REMOVED), []);
  });

  test("the bitmap is written at the store's commit: reopened, the removed stay removed", () => {
    const directory = mkdtempSync(join(tmpdir(), "ferry-blocks-"));
    try {
      const kv = new LmdbKv({ path: join(directory, "kv"), noSync: true, commitIntervalMs: 60_000 });
      const h = new Harness(undefined, kv);
      h.apply(...sends("a", 10));
      const leased = ids(h, "a", 4);
      h.one({ op: "ack", mailbox: "a", ids: leased });
      // A group commit holds the bitmap: no apply wrote it.
      kv.commit();
      assert.equal(keys(kv, REMOVED).length, 1);
      const reopened = new Broker(kv);
      assert.equal(reopened.appliedIndex(), h.index);
      const left = reopened.apply(h.index + 1, msTimestamp(h.nowMs), [{ op: "receive", mailbox: "a", max: 100 }])[0]!;
      assert.ok(left.ok && "messages" in left);
      assert.deepEqual(
        left.messages.map((message) => message.id).filter((id) => leased.includes(id)),
        [],
        "no acked message comes back",
      );
      assert.equal(left.messages.length, 6);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  test("a block found by its head alone (an ACK after the commit) gives its records when they are asked for", () => {
    const directory = mkdtempSync(join(tmpdir(), "ferry-blocks-"));
    try {
      const kv = new LmdbKv({ path: join(directory, "kv"), noSync: true, commitIntervalMs: 60_000 });
      const h = new Harness(undefined, kv);
      const bodies = Array.from({ length: 10 }, (_, i) => `message ${i} `.repeat(i + 1));
      h.apply(...bodies.map((body) => ({ op: "send" as const, sender: "alice", recipients: ["a"], body: text(body) })));
      h.apply(...sends("b", 5)); // another block, read between the head and the records below
      const leased = ids(h, "a", 6);
      kv.commit(); // the blocks read so far are forgotten
      h.one({ op: "ack", mailbox: "a", ids: leased.slice(0, 3) }); // reads a's block by its head
      assert.equal(h.list("b", 10).items.length, 5);
      h.one({ op: "nack", mailbox: "a", ids: leased.slice(3) });
      const again = h.receive("a", 10).messages;
      assert.deepEqual(
        again.map((message) => Buffer.from(message.body).toString()),
        bodies.slice(3),
        "the 3 given back, then the 4 never leased, each with its own body",
      );
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  test("a message stored and removed within its own entry leaves no block", () => {
    const h = new Harness();
    h.one({ op: "set-mailbox-config", mailbox: "a", config: { messagesMax: 1, overflow: "drop-oldest" } });
    h.apply(...sends("a", 5));
    assert.equal(h.list("a", 10).items.length, 1, "drop-oldest kept the last");
    assert.equal(keys(h.kv, MESSAGE).length, 1);
    h.apply({ op: "purge", mailbox: "a" });
    assert.deepEqual(keys(h.kv, MESSAGE), []);
    assert.deepEqual(keys(h.kv, REMOVED), []);
  });
});
