import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Broker, DEAD_LETTER_REASON_HEADER, msTimestamp, StateFormatError } from "../../src/broker/broker.js";
import { APPLIED_KEY, DEDUPE_LIST, encodeFormat, encodeIndex, FORMAT_KEY, STATE_FORMAT, u64Key } from "../../src/broker/records.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { decodeCommands, encodeCommands } from "../../src/broker/commands.js";
import { dump, Harness, read, text } from "./harness.js";

describe("send", () => {
  test("assigns a one-word id from the log position and stores the message in order", () => {
    const h = new Harness();
    const first = h.send("bob", "one");
    const second = h.send("bob", "two");
    assert.ok(first.ok && "id" in first && second.ok && "id" in second);
    assert.match(first.id, /^[0-9a-z]+~[0-9a-z]+$/);
    assert.notEqual(first.id, second.id);
    assert.deepEqual(h.list("bob").items.map((item) => [item.id, item.state, item.bytes]), [
      [first.id, "ready", 3],
      [second.id, "ready", 3],
    ]);
  });

  test("dedupes a client id within the window and returns the first result", () => {
    const h = new Harness({ dedupeWindowMs: 1000 });
    const first = h.send("bob", "a", { id: "m-1" });
    h.advance(999);
    const again = h.send("bob", "b", { id: "m-1" });
    assert.deepEqual(again, { ...first, duplicate: true });
    assert.deepEqual(h.bodies("bob"), ["a"]);
    h.apply({ op: "ack", mailbox: "bob", ids: ["m-1"] });
    h.advance(1);
    const later = h.send("bob", "c", { id: "m-1" });
    assert.ok(later.ok && "duplicate" in later && !later.duplicate);
  });

  test("id records go once their dedupe window passed and no mailbox holds the id", () => {
    const h = new Harness({ dedupeWindowMs: 1000 });
    const keys = (prefix: string) => dump(h.kv).filter(([key]) => key.startsWith(prefix)).length;
    // Records: id records in the store, and those inline in a dedupe list (ids within the window).
    const records = () => keys("\x07") + h.broker.dedupeIdsInMemory();
    h.send("bob", "a", { id: "m-1" });
    h.send("bob", "b", { id: "m-2" });
    h.receive("bob", 2);
    h.apply({ op: "ack", mailbox: "bob", ids: ["m-1"] });
    h.advance(1000);
    // m-1 is stale: sent again, it is recorded anew.
    const again = h.send("bob", "c", { id: "m-1" });
    assert.ok(again.ok && "duplicate" in again && !again.duplicate);
    h.advance(1);
    h.apply(); // m-2 stopped deduping (still stored: an id record), the new m-1 dedupes (inline)
    assert.equal(keys("\x07"), 1);
    assert.equal(h.broker.dedupeIdsInMemory(), 1);
    assert.equal(keys("\x08"), 1);
    const duplicate = h.send("carol", "d", { id: "m-1" });
    assert.ok(duplicate.ok && "duplicate" in duplicate && duplicate.duplicate);
    const conflict = h.send("bob", "e", { id: "m-2" });
    assert.equal(!conflict.ok && conflict.code, "CONFLICT");
    assert.deepEqual(h.apply({ op: "ack", mailbox: "bob", ids: ["m-2"] }), [{ ok: true, count: 1 }]);
    // m-2 neither dedupes nor is held, but ACK leaves id records alone: the sweep that listed it
    // again (when it stopped deduping) drops it a window later.
    assert.equal(records(), 2);
    const again2 = h.send("bob", "f", { id: "m-2" }); // no CONFLICT: the holder entry is stale
    assert.ok(again2.ok && "duplicate" in again2 && !again2.duplicate);
    h.receive("bob", 2);
    h.apply({ op: "ack", mailbox: "bob", ids: ["m-1", "m-2"] });
    assert.equal(records(), 2); // both still dedupe
    h.advance(1000);
    h.apply();
    assert.equal(records() + keys("\x08"), 0);
  });

  test("a client id still stored after the window is a conflict", () => {
    const h = new Harness({ dedupeWindowMs: 1000 });
    h.send("bob", "a", { id: "m-1" });
    h.advance(5000);
    const result = h.send("bob", "b", { id: "m-1" });
    assert.equal(!result.ok && result.code, "CONFLICT");
  });

  test("fan-out is atomic: one bad recipient stores nothing", () => {
    const h = new Harness();
    h.apply({ op: "set-mailbox-config", mailbox: "full", config: { messagesMax: 1 } });
    h.send("full", "x");
    const before = dump(h.kv);
    const invalid = h.send(["bob", "no spaces"], "hi");
    assert.equal(!invalid.ok && invalid.code, "INVALID");
    // With a client id too: the id record its lookup claimed is given back.
    const limited = h.send(["bob", "full"], "hi", { id: "f-1" });
    assert.equal(!limited.ok && limited.code, "LIMIT");
    const twice = h.send(["bob", "bob"], "hi");
    assert.equal(!twice.ok && twice.code, "INVALID");
    // Only the applied index moved.
    assert.deepEqual(dump(h.kv).filter(([key]) => key !== "\x00a"), before.filter(([key]) => key !== "\x00a"));
    const ok = h.send(["bob", "carol"], "hi", { id: "f-1" });
    assert.ok(ok.ok && "duplicate" in ok && !ok.duplicate, "the refused SEND left its id free");
    assert.deepEqual(h.bodies("bob"), ["hi"]);
    assert.deepEqual(h.bodies("carol"), ["hi"]);
  });

  test("limits are enforced with codes", () => {
    const h = new Harness({ bodyBytesMax: 4, headersCountMax: 1, recipientsMax: 2, idLengthMax: 5, mailboxesMax: 2 });
    const codeOf = (result: ReturnType<Harness["send"]>) => (result.ok ? "OK" : result.code);
    assert.equal(codeOf(h.send("bob", "12345")), "TOO_LARGE");
    assert.equal(codeOf(h.send("bob", "1", { headers: { a: "1", b: "2" } })), "TOO_LARGE");
    assert.equal(codeOf(h.send(["a", "b", "c"], "1")), "TOO_LARGE");
    assert.equal(codeOf(h.send("bob", "1", { id: "123456" })), "TOO_LARGE");
    assert.equal(codeOf(h.send("bob", "1", { id: "a b" })), "INVALID");
    assert.equal(codeOf(h.send("bob", "1", { id: "a~b" })), "INVALID");
    assert.equal(codeOf(h.send("bob", "1", { delayMs: -1 })), "INVALID");
    assert.equal(codeOf(h.send("bob", "1", { sender: "" })), "INVALID");
    assert.equal(codeOf(h.send(["a", "b"], "1")), "OK");
    assert.equal(codeOf(h.send("c", "1")), "LIMIT");
    assert.equal(h.broker.mailboxCount(), 2);
  });

  test("reject vs drop-oldest when a mailbox is full", () => {
    const h = new Harness();
    h.apply(
      { op: "set-mailbox-config", mailbox: "r", config: { messagesMax: 2 } },
      { op: "set-mailbox-config", mailbox: "d", config: { messagesMax: 2, overflow: "drop-oldest" } },
      { op: "set-mailbox-config", mailbox: "b", config: { bytesMax: 5, overflow: "drop-oldest" } },
    );
    for (const body of ["1", "2", "3"]) {
      h.send("r", body);
      h.send("d", body);
    }
    assert.equal(h.list("r").items.length, 2);
    assert.deepEqual(h.bodies("d"), ["2", "3"]);
    h.send("b", "abc");
    h.send("b", "de");
    h.send("b", "fgh");
    assert.deepEqual(h.bodies("b"), ["de", "fgh"]);
    const tooBig = h.send("b", "123456");
    assert.equal(!tooBig.ok && tooBig.code, "LIMIT");
  });
});

describe("receive, ack, nack, extend", () => {
  test("leases in order, hides leased messages, counts deliveries", () => {
    const h = new Harness();
    for (const body of ["a", "b", "c"]) h.send("bob", body);
    const first = h.receive("bob", 2);
    assert.deepEqual(first.messages.map((m) => [read(m.body), m.deliveries, m.recipient, m.sender]), [
      ["a", 1, "bob", "alice"],
      ["b", 1, "bob", "alice"],
    ]);
    assert.deepEqual(h.bodies("bob"), ["c"]);
    assert.deepEqual(h.receive("bob").messages, []);
    assert.deepEqual(h.list("bob").items.map((item) => item.state), ["leased", "leased", "leased"]);
  });

  test("an expired lease makes the message visible again with a higher count", () => {
    const h = new Harness();
    h.send("bob", "a");
    h.receive("bob", 1, 1000);
    h.advance(999);
    assert.equal(h.receive("bob").messages.length, 0);
    assert.equal(h.broker.nextVisibleAt("bob"), msTimestamp(h.nowMs + 1));
    h.advance(1);
    const again = h.receive("bob");
    assert.deepEqual(again.messages.map((m) => m.deliveries), [2]);
  });

  test("ack removes only leased messages; a second ack or an expired lease is skipped", () => {
    const h = new Harness();
    const sent = h.send("bob", "a");
    const other = h.send("bob", "b");
    assert.ok(sent.ok && "id" in sent && other.ok && "id" in other);
    h.receive("bob", 1, 1000);
    const ack = h.apply({ op: "ack", mailbox: "bob", ids: [sent.id, other.id, "nope"] });
    assert.deepEqual(ack, [{ ok: true, count: 1 }]);
    assert.deepEqual(h.apply({ op: "ack", mailbox: "bob", ids: [sent.id] }), [{ ok: true, count: 0 }]);
    h.receive("bob", 1, 1000);
    h.advance(1000);
    assert.deepEqual(h.apply({ op: "ack", mailbox: "bob", ids: [other.id] }), [{ ok: true, count: 0 }]);
    assert.equal(h.list("bob").items.length, 1);
  });

  test("nack releases at once or after a delay; extend renews a lease", () => {
    const h = new Harness();
    const a = h.send("bob", "a");
    const b = h.send("bob", "b");
    assert.ok(a.ok && "id" in a && b.ok && "id" in b);
    h.receive("bob", 2, 1000);
    assert.deepEqual(h.apply({ op: "nack", mailbox: "bob", ids: [a.id] }), [{ ok: true, count: 1 }]);
    assert.deepEqual(h.apply({ op: "extend", mailbox: "bob", ids: [b.id], visibilityMs: 5000 }), [{ ok: true, count: 1 }]);
    assert.deepEqual(h.list("bob").items.map((item) => item.state), ["ready", "leased"]);
    h.receive("bob", 1, 1000);
    assert.deepEqual(h.apply({ op: "nack", mailbox: "bob", ids: [a.id], delayMs: 300 }), [{ ok: true, count: 1 }]);
    assert.deepEqual(h.list("bob").items.map((item) => item.state), ["delayed", "leased"]);
    h.advance(1000);
    assert.deepEqual(h.bodies("bob"), ["a"]);
    h.advance(4000);
    assert.deepEqual(h.bodies("bob"), ["b"]);
  });

  test("past max deliveries a message moves to the dead-letter mailbox with the reason", () => {
    const h = new Harness({ mailbox: { deliveriesMax: 2 } as never });
    h.send("jobs", "work", { id: "job-1" });
    h.receive("jobs", 1, 100);
    h.advance(100);
    h.receive("jobs", 1, 100);
    h.advance(100);
    assert.deepEqual(h.receive("jobs").messages, []);
    const dead = h.receive("jobs:dlq");
    assert.equal(dead.messages.length, 1);
    assert.equal(dead.messages[0]!.id, "job-1");
    assert.equal(dead.messages[0]!.deliveries, 1);
    assert.equal(dead.messages[0]!.headers?.[DEAD_LETTER_REASON_HEADER], "max-deliveries");
    // A NACK of the last allowed delivery dead-letters at once.
    h.send("jobs", "again", { id: "job-2" });
    h.receive("jobs");
    h.receive("jobs"); // nothing: leased
    h.advance(30_000);
    h.receive("jobs");
    assert.deepEqual(h.apply({ op: "nack", mailbox: "jobs", ids: ["job-2"] }), [{ ok: true, count: 1 }]);
    assert.deepEqual(h.list("jobs:dlq").items.map((item) => item.id), ["job-1", "job-2"]);
  });
});

describe("time", () => {
  test("delayed delivery", () => {
    const h = new Harness();
    h.send("bob", "later", { delayMs: 500 });
    h.send("bob", "now");
    assert.deepEqual(h.list("bob").items.map((item) => item.state), ["delayed", "ready"]);
    assert.deepEqual(h.bodies("bob"), ["now"]);
    h.advance(500);
    assert.deepEqual(h.bodies("bob"), ["later"]);
  });

  test("expired messages are dropped, or dead-lettered when configured", () => {
    const h = new Harness();
    h.apply({ op: "set-mailbox-config", mailbox: "dl", config: { ttlMs: 100, expiry: "dead-letter" } });
    h.send("drop", "x", { ttlMs: 100 });
    h.send("dl", "y");
    h.send("dl", "keep", { ttlMs: 0 });
    h.advance(99);
    assert.equal(h.list("drop").items.length, 1);
    h.advance(1);
    assert.equal(h.list("drop").items.length, 0); // gone from LIST at once
    assert.deepEqual(h.bodies("drop"), []);
    assert.equal(h.broker.mailboxCount(), 2); // "drop" emptied and forgotten; dl and dl:dlq remain
    const dead = h.receive("dl:dlq");
    assert.deepEqual(dead.messages.map((m) => [read(m.body), m.headers?.[DEAD_LETTER_REASON_HEADER]]), [["y", "expired"]]);
    assert.deepEqual(h.bodies("dl"), ["keep"]);
  });
});

describe("list, purge, delete, wakeups", () => {
  test("paginates with a cursor and takes no lease", () => {
    const h = new Harness();
    for (let i = 0; i < 5; i++) h.send("bob", `m${i}`);
    const pages: string[][] = [];
    let cursor: string | undefined;
    do {
      const page = h.list("bob", 2, cursor);
      pages.push(page.items.map((item) => item.state));
      cursor = page.next;
    } while (cursor !== undefined);
    assert.deepEqual(pages.map((page) => page.length), [2, 2, 1]);
    assert.equal(h.receive("bob").messages.length, 5);
    assert.equal(h.broker.list({ op: "list", mailbox: "bob", cursor: "zz" }, 0n).ok, false);
    assert.equal(h.broker.list({ op: "list", mailbox: "bad name" }, 0n).ok, false);
  });

  test("purge empties a mailbox and keeps its settings; delete forgets both", () => {
    const h = new Harness();
    h.apply({ op: "set-mailbox-config", mailbox: "bob", config: { visibilityMs: 10 } });
    h.send("bob", "a");
    h.send("bob", "b", { delayMs: 100, ttlMs: 1000 });
    assert.deepEqual(h.apply({ op: "purge", mailbox: "bob" }), [{ ok: true, count: 2 }]);
    assert.equal(h.broker.mailboxConfig("bob").visibilityMs, 10);
    assert.deepEqual(h.apply({ op: "delete", mailbox: "bob" }), [{ ok: true, count: 0 }]);
    assert.equal(h.broker.mailboxConfig("bob").visibilityMs, 30_000);
    assert.equal(h.broker.mailboxCount(), 0);
    assert.deepEqual(dump(h.kv).map(([key]) => key), ["\x00a", "\x00f"]); // the applied index and the state format
  });

  test("wakeups name mailboxes that gained visible messages", () => {
    const h = new Harness();
    h.send("bob", "a");
    h.send("carol", "b", { delayMs: 10 });
    assert.deepEqual(h.broker.takeWakeups(), ["bob"]);
    assert.deepEqual(h.broker.takeWakeups(), []);
    assert.equal(h.broker.nextVisibleAt("carol"), msTimestamp(h.nowMs + 10));
  });
});

describe("encoding and recovery", () => {
  test("commands round-trip through the binary encoding", () => {
    const commands = [
      { op: "send", sender: "a", recipients: ["b", "c"], body: text("héllo"), id: "x", headers: { k: "v€" }, delayMs: 1, ttlMs: 2 },
      { op: "send", sender: "a", recipients: ["b"], body: new Uint8Array(0) },
      { op: "receive", mailbox: "b", max: 3, visibilityMs: 4, consumer: "w1" },
      { op: "ack", mailbox: "b", ids: ["x", "y"] },
      { op: "nack", mailbox: "b", ids: ["x"], delayMs: 5 },
      { op: "extend", mailbox: "b", ids: ["x"], visibilityMs: 6 },
      { op: "purge", mailbox: "b" },
      { op: "delete", mailbox: "b" },
      { op: "set-mailbox-config", mailbox: "b", config: { ttlMs: 7, overflow: "drop-oldest", expiry: "dead-letter" } },
    ] as const;
    assert.deepEqual(decodeCommands(encodeCommands(commands as never)), commands);
    assert.throws(() => decodeCommands(new Uint8Array([1, 1, 0, 0, 0, 99])), /unknown command tag|corrupt/);
    assert.throws(() => decodeCommands(encodeCommands(commands as never).subarray(0, 20)), /corrupt|exceeds/);
  });

  // Strings are decoded from wherever the entry's bytes sit: a Buffer or a plain Uint8Array, at
  // any offset into a larger buffer (an entry inside a WAL batch or a peer frame), ASCII or not.
  test("strings decode the same from any view of the bytes", () => {
    const text16 = fc.string({ unit: "binary", maxLength: 40 });
    fc.assert(
      fc.property(text16, fc.array(text16, { minLength: 1, maxLength: 3 }), text16, text16, fc.nat(64), (sender, recipients, id, header, pad) => {
        const commands = [{ op: "send", sender, recipients, body: text("b"), id, headers: { h: header } }];
        const encoded = encodeCommands(commands as never);
        const larger = new Uint8Array(pad + encoded.length + 7);
        larger.set(encoded, pad);
        const plainView = larger.subarray(pad, pad + encoded.length);
        const bufferView = Buffer.from(larger.buffer, pad, encoded.length);
        for (const view of [encoded, plainView, bufferView]) {
          // A body decoded from a Buffer is a Buffer: compare its bytes.
          const decoded = decodeCommands(view).map((command) => ({ ...command, body: new Uint8Array((command as { body: Uint8Array }).body) }));
          assert.deepEqual(decoded, commands);
        }
      }),
      { numRuns: 300 },
    );
  });

  test("a header named __proto__ is kept as a header", () => {
    const headers = JSON.parse('{"__proto__":"x","a":"b"}') as Record<string, string>;
    const [command] = decodeCommands(encodeCommands([{ op: "send", sender: "a", recipients: ["bob"], body: text("1"), headers }]));
    const h = new Harness();
    h.one(command!);
    const [message] = h.receive("bob").messages;
    assert.deepEqual(Object.entries(message!.headers ?? {}), [["__proto__", "x"], ["a", "b"]]);
  });

  test("snapshot then restore gives the same state; a damaged snapshot changes nothing", () => {
    const h = new Harness();
    h.send(["bob", "carol"], "a", { id: "k" });
    h.send("bob", "b", { ttlMs: 10_000 });
    h.receive("bob", 1);
    const { index, chunks } = h.broker.snapshot();
    const saved = [...chunks];
    const copy = new Harness();
    copy.broker.restore(saved);
    assert.equal(index, h.index);
    assert.equal(copy.broker.appliedIndex(), h.index);
    assert.deepEqual(dump(copy.kv), dump(h.kv));
    const damaged = saved.map((chunk) => chunk.slice());
    damaged[1]![10]! ^= 1;
    const before = dump(copy.kv);
    assert.throws(() => copy.broker.restore(damaged), /checksum|corrupt/);
    assert.throws(() => copy.broker.restore(saved.slice(0, -1)), /truncated/);
    assert.deepEqual(dump(copy.kv), before);
  });
});

describe("snapshot chunks", () => {
  test("are cut by size as well as by count: records of large bodies come a few per chunk, and restore whole", () => {
    const h = new Harness();
    const body = new Uint8Array(700 * 1024).fill(7);
    for (let i = 0; i < 6; i++) h.apply({ op: "send", sender: "alice", recipients: ["big"], body });
    const saved = [...h.broker.snapshot().chunks];
    const records = saved.slice(1, -1); // between the header and the trailer
    assert.ok(records.length >= 3, `${records.length} chunks of records for 4 MiB of bodies`);
    // A chunk ends with the record that takes it past 1 MiB: at most 1 MiB plus one record.
    for (const chunk of records) assert.ok(chunk.length <= 1024 * 1024 + body.length + 1024, `a chunk of ${chunk.length} bytes`);
    const copy = new Harness();
    copy.broker.restore(saved);
    assert.deepEqual(dump(copy.kv), dump(h.kv));
  });
});

describe("restoring a chunk at a time", () => {
  test("yields once per chunk and ends with the state restore() gives; stopped halfway, the store has no applied index", () => {
    const h = new Harness();
    // 1 KiB bodies: ~3 MiB of records, chunks of 1 MiB.
    const sends = Array.from({ length: 3000 }, (_, i) => ({ op: "send" as const, sender: "alice", recipients: [`m${i % 7}`], body: text(`body ${i} ${"x".repeat(1000)}`) }));
    for (let i = 0; i < sends.length; i += 500) h.apply(...sends.slice(i, i + 500));
    h.receive("m1", 5);
    const saved = [...h.broker.snapshot().chunks];
    assert.ok(saved.length >= 4, `${saved.length} chunks: a header, several of records, a trailer`);

    const whole = new Harness();
    whole.broker.restore(saved);
    const sliced = new Harness();
    sliced.send("zed", "replaced");
    let steps = 0;
    for (const _ of sliced.broker.restoring(saved)) steps++;
    assert.equal(steps, saved.length, "a pause after every chunk");
    assert.deepEqual(dump(sliced.kv), dump(whole.kv));
    assert.deepEqual(dump(sliced.kv), dump(h.kv));
    assert.equal(sliced.broker.appliedIndex(), h.index);
    sliced.index = h.index;
    assert.equal(sliced.receive("m1", 1000).messages.length, 429 - 5, "the restored broker serves the snapshot's state");

    const halfway = new Harness();
    halfway.send("zed", "replaced");
    const restoring = halfway.broker.restoring(saved);
    restoring.next();
    restoring.next();
    restoring.return();
    assert.equal(halfway.kv.get(APPLIED_KEY), undefined, "no applied index until the last step");
    assert.equal(new Broker(halfway.kv).appliedIndex(), 0, "reopened, it is behind every snapshot: a node restores again");
    assert.ok(dump(halfway.kv).length > 0 && dump(halfway.kv).length < dump(h.kv).length);
  });
});

describe("rebuilding the in-memory indexes after a restore", () => {
  // 40,000 client ids: more than two of reloading()'s steps of 16,384 in each of its passes.
  const IDS = 40_000;
  const filled = () => {
    const h = new Harness();
    for (let i = 0; i < IDS; i += 500) {
      h.apply(...Array.from({ length: 500 }, (_, j) => ({ op: "send" as const, sender: "alice", recipients: ["ids"], body: text("x"), id: `client-${i + j}` })));
    }
    return h;
  };
  const resend = (h: Harness, id: string) => h.send("ids", "again", { id });

  test("pauses while it rebuilds, and ends where a restore in one go does; closed during the rebuild, it finishes at once", () => {
    const h = filled();
    const saved = [...h.broker.snapshot().chunks];
    const whole = new Harness();
    whole.broker.restore(saved);
    assert.equal(whole.broker.dedupeIdsInMemory(), IDS);

    const sliced = new Harness();
    let steps = 0;
    for (const _ of sliced.broker.restoring(saved)) steps++;
    assert.ok(steps >= saved.length + 4, `${steps} pauses for ${saved.length} chunks: some in the rebuild`);
    for (const replica of [whole, sliced]) {
      replica.index = h.index;
      replica.nowMs = h.nowMs;
      assert.equal(replica.broker.dedupeIdsInMemory(), IDS);
      const again = resend(replica, "client-39999");
      assert.ok(again.ok && "duplicate" in again && again.duplicate, "the restored broker still knows the ids");
    }
    assert.deepEqual(dump(sliced.kv), dump(whole.kv));

    const closed = new Harness();
    const restoring = closed.broker.restoring(saved);
    for (let i = 0; i <= saved.length + 1; i++) assert.equal(restoring.next().done, false, "still rebuilding");
    restoring.return();
    closed.index = h.index;
    closed.nowMs = h.nowMs;
    assert.equal(closed.broker.appliedIndex(), h.index);
    assert.equal(closed.broker.dedupeIdsInMemory(), IDS, "the indexes were made whole");
    const again = resend(closed, "client-0");
    assert.ok(again.ok && "duplicate" in again && again.duplicate);
  });
});

describe("state format", () => {
  const put = (kv: MemoryKv, key: string, value: Uint8Array) => kv.transaction(() => kv.put(key, value));

  test("a fresh store gets the format record with its first apply, and opens again", () => {
    const h = new Harness();
    assert.equal(h.kv.get(FORMAT_KEY), undefined);
    h.send("bob", "a");
    assert.deepEqual(h.kv.get(FORMAT_KEY), encodeFormat(STATE_FORMAT));
    const reopened = new Broker(h.kv);
    assert.equal(reopened.appliedIndex(), h.index);
  });

  // The store `npm start` found in an old ./data: a dedupe key per SEND (the layout before one
  // dedupe list per entry), with an empty value. Read as a list, it failed every node's apply.
  test("a store from before the format record is refused at open, with what to do", () => {
    const kv = new MemoryKv();
    put(kv, APPLIED_KEY, encodeIndex(7));
    put(kv, `${DEDUPE_LIST}${u64Key(1_000)}01a20f4c-1d80-7000-8000-000000000000`, new Uint8Array(0));
    assert.throws(
      () => new Broker(kv),
      (error: unknown) => error instanceof StateFormatError && error.format === undefined && /before state format versioning.*empty data directory/.test(error.message),
    );
  });

  test("a store of another format is refused at open", () => {
    const kv = new MemoryKv();
    put(kv, APPLIED_KEY, encodeIndex(7));
    put(kv, FORMAT_KEY, encodeFormat(STATE_FORMAT + 1));
    assert.throws(() => new Broker(kv), (error: unknown) => error instanceof StateFormatError && error.format === STATE_FORMAT + 1 && error.message.includes(`state format ${STATE_FORMAT + 1}`));
    put(kv, FORMAT_KEY, new Uint8Array([1, 0, 0]));
    assert.throws(() => new Broker(kv), (error: unknown) => error instanceof StateFormatError && error.format === "damaged" && /damaged format record/.test(error.message));
  });

  test("a snapshot of another format is refused and changes nothing", () => {
    const foreign = new Harness();
    foreign.send("bob", "a");
    put(foreign.kv as MemoryKv, FORMAT_KEY, encodeFormat(STATE_FORMAT + 1));
    const h = new Harness();
    h.send("carol", "b");
    const before = dump(h.kv);
    assert.throws(
      () => h.broker.restore([...foreign.broker.snapshot().chunks]),
      (error: unknown) => error instanceof StateFormatError && error.source === "snapshot" && new RegExp(`a snapshot was written in state format ${STATE_FORMAT + 1}.*same state format`).test(error.message),
    );
    assert.deepEqual(dump(h.kv), before);
    assert.equal(h.receive("carol").messages.length, 1, "the broker still serves its own state");
  });
});

describe("entries without commands", () => {
  test("advance moves the applied index and sweeps nothing: such an entry has no time of its own", () => {
    // Membership changes and empty entries used to be applied at the node's own clock, which ran
    // the TTL and dedupe sweeps at a time each replica chose for itself.
    const h = new Harness({ dedupeWindowMs: 1000 });
    h.send("bob", "short", { ttlMs: 500 });
    h.send("dave", "once", { id: "d" });
    const before = dump(h.kv).filter(([key]) => key !== APPLIED_KEY);
    h.broker.advance(++h.index);
    h.broker.advance(++h.index);
    assert.equal(h.broker.appliedIndex(), h.index);
    assert.deepEqual(dump(h.kv).filter(([key]) => key !== APPLIED_KEY), before, "nothing but the applied index changed");
    assert.equal(h.broker.dedupeIdsInMemory(), 1);
    h.advance(2000);
    h.send("carol", "tick"); // an entry with a time: both sweeps run
    assert.deepEqual(h.list("bob").items, []);
    assert.equal(h.broker.dedupeIdsInMemory(), 0);
  });
});

describe("sweeps skip their scan while nothing can be due", () => {
  // Counts the scans of the expiry index ("\x06") and of the dedupe lists ("\x08").
  function counted(): { kv: MemoryKv; scans: { expiry: number; dedupe: number } } {
    const kv = new MemoryKv();
    const scans = { expiry: 0, dedupe: 0 };
    const scan = kv.scan.bind(kv);
    kv.scan = (start, end, limit, reverse) => {
      if (start.startsWith("\x06")) scans.expiry++;
      if (start.startsWith("\x08")) scans.dedupe++;
      return scan(start, end, limit, reverse);
    };
    return { kv, scans };
  }

  test("a TTL still expires on time, a dedupe window still ends on time, and entries in between scan nothing", () => {
    const { kv, scans } = counted();
    const h = new Harness({ dedupeWindowMs: 1000 }, kv);
    h.apply({ op: "set-mailbox-config", mailbox: "bob", config: { expiry: "dead-letter" } });
    h.send("bob", "short", { ttlMs: 500 });
    h.send("dave", "once", { id: "d" });
    const received = h.receive("dave");
    assert.deepEqual(h.apply({ op: "ack", mailbox: "dave", ids: received.messages.map((m) => m.id) }), [{ ok: true, count: 1 }]);
    const before = { ...scans };
    for (let i = 0; i < 20; i++) {
      h.advance(10);
      h.send("carol", `n${i}`);
    }
    assert.deepEqual(scans, before, "200 ms with nothing due: no sweep scans");
    const early = h.send("dave", "twice", { id: "d" });
    assert.equal(early.ok && "duplicate" in early && early.duplicate, true, "within the window: a duplicate");
    h.advance(400); // past the TTL
    h.send("carol", "tick");
    assert.deepEqual(h.list("bob").items, [], "the TTL message expired on time");
    assert.equal(h.list("bob:dlq").items.length, 1, "and the sweep dead-lettered it");
    assert.equal(h.broker.dedupeIdsInMemory(), 1, "the record of d is inline in its dedupe list");
    h.advance(1000); // past the dedupe window of "d"
    h.send("carol", "tick");
    assert.equal(h.broker.dedupeIdsInMemory(), 0, "the dedupe sweep dropped the record of the acked message");
    assert.equal(kv.get("\x07d"), undefined, "and wrote no id record");
    const late = h.send("dave", "thrice", { id: "d" });
    assert.equal(late.ok && "duplicate" in late && late.duplicate, false, "the id left the dedupe window");
    assert.equal(h.list("dave").items.length, 1);
  });

  test("a restored or reopened broker looks again before it skips", () => {
    const source = new Harness();
    source.apply({ op: "set-mailbox-config", mailbox: "bob", config: { expiry: "dead-letter" } });
    source.send("bob", "x", { ttlMs: 100 });
    const { kv } = counted();
    const target = new Harness({}, kv);
    target.send("carol", "y"); // the target's sweeps now know its (empty) expiry index
    target.advance(10);
    target.send("carol", "z");
    target.broker.restore(source.broker.snapshot().chunks);
    target.index = source.index;
    target.nowMs = source.nowMs + 200; // past the TTL of the restored message
    target.send("carol", "tick");
    assert.equal(target.list("bob:dlq").items.length, 1, "the restored message was swept");
    const reopened = new Harness({}, kv);
    assert.equal(reopened.broker.appliedIndex(), target.index);
  });
});
