// Per-mailbox order modes: "log" (the default, unchanged) and "sender-time" with a reorder window.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Broker, type BrokerCommand, msTimestamp, timestampMs } from "../../src/broker/broker.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { decodeCommands, encodeCommands } from "../../src/broker/commands.js";
import { Harness, read } from "./harness.js";
import { applyToBoth, Model } from "./model.js";

function senderTimeMailbox(reorderWindowMs = 1000): Harness {
  const h = new Harness();
  const result = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "sender-time", reorderWindowMs } });
  assert.ok(result.ok);
  return h;
}

describe("sender-time order", () => {
  test("a late message stamped earlier is delivered first within the window", () => {
    const h = senderTimeMailbox(1000);
    const t = h.nowMs;
    h.send("bob", "later", { senderTime: msTimestamp(t + 50) });
    h.advance(100);
    h.send("bob", "earlier", { senderTime: msTimestamp(t) });
    assert.deepEqual(
      h.list("bob").items.map((item) => item.state),
      ["delayed", "delayed"],
    );
    h.advance(1000); // t + 1100: both windows have passed
    assert.deepEqual(
      h.list("bob").items.map((item) => [item.state, item.senderTime]),
      [
        ["ready", msTimestamp(t)],
        ["ready", msTimestamp(t + 50)],
      ],
    );
    const messages = h.receive("bob").messages;
    assert.deepEqual(
      messages.map((m) => [read(m.body), m.senderTime]),
      [
        ["earlier", msTimestamp(t)],
        ["later", msTimestamp(t + 50)],
      ],
    );
  });

  test("a message is not visible before senderTime + window, and nextVisibleAt says when", () => {
    const h = senderTimeMailbox(500);
    const t = h.nowMs;
    h.send("bob", "x", { senderTime: msTimestamp(t + 10) });
    assert.equal(h.broker.nextVisibleAt("bob"), msTimestamp(t + 510));
    h.advance(509);
    assert.deepEqual(h.bodies("bob"), []);
    h.advance(1);
    assert.deepEqual(h.bodies("bob"), ["x"]);
  });

  test("without a senderTime the entry timestamp is the sender time", () => {
    const h = senderTimeMailbox(200);
    h.send("bob", "a");
    h.send("bob", "b");
    assert.deepEqual(h.bodies("bob"), []);
    h.advance(200);
    assert.deepEqual(h.bodies("bob"), ["a", "b"]);
  });

  test("a message later than the window is delivered as soon as possible", () => {
    const h = senderTimeMailbox(100);
    const t = h.nowMs;
    h.send("bob", "second", { senderTime: msTimestamp(t) });
    h.advance(150);
    assert.deepEqual(h.bodies("bob"), ["second"]);
    h.send("bob", "first", { senderTime: msTimestamp(t - 10) });
    assert.deepEqual(h.bodies("bob"), ["first"]); // no wait: its window is long over
  });

  test("ready messages go by sender time, also after a release, and LIST pages follow that order", () => {
    const h = senderTimeMailbox(0);
    const t = h.nowMs;
    for (const [body, offset] of [["c", 30], ["a", 10], ["b", 20]] as const) h.send("bob", body, { senderTime: msTimestamp(t - 100 + offset) });
    const first = h.receive("bob", 1, 1000);
    assert.deepEqual(first.messages.map((m) => read(m.body)), ["a"]);
    h.one({ op: "nack", mailbox: "bob", ids: [first.messages[0]!.id] });
    const page1 = h.list("bob", 2);
    assert.ok(page1.next !== undefined);
    const page2 = h.list("bob", 2, page1.next);
    assert.equal(page2.next, undefined);
    assert.equal(page1.items.length + page2.items.length, 3);
    assert.match(page1.next, /^s[0-9a-f]{40}$/);
    for (const cursor of ["s123", `s${"g".repeat(40)}`, `${"0".repeat(40)}`]) {
      const reply = h.broker.list({ op: "list", mailbox: "bob", cursor }, msTimestamp(h.nowMs));
      assert.equal(!reply.ok && reply.code, "INVALID", cursor);
    }
    assert.deepEqual(h.bodies("bob"), ["a", "b", "c"]);
  });

  test("senderTime too far ahead of the entry time is refused; the window is bounded", () => {
    const h = senderTimeMailbox();
    const tooFar = h.send("bob", "x", { senderTime: msTimestamp(h.nowMs + 60_001) });
    assert.equal(!tooFar.ok && tooFar.code, "INVALID");
    const wide = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { reorderWindowMs: 60_001 } });
    assert.equal(!wide.ok && wide.code, "INVALID");
    const mode = h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "random" as never } });
    assert.equal(!mode.ok && mode.code, "INVALID");
  });

  test("log-ordered messages stored before a switch come first", () => {
    const h = new Harness();
    h.send("bob", "old");
    h.one({ op: "set-mailbox-config", mailbox: "bob", config: { order: "sender-time", reorderWindowMs: 0 } });
    h.send("bob", "new", { senderTime: msTimestamp(h.nowMs - 1000) });
    assert.deepEqual(h.list("bob").items.length, 2);
    assert.deepEqual(h.bodies("bob"), ["old", "new"]);
  });
});

describe("log order", () => {
  test("ignores senderTime: delivery stays in log order and is immediate", () => {
    const h = new Harness();
    const t = h.nowMs;
    h.send("bob", "one", { senderTime: msTimestamp(t + 50) });
    h.send("bob", "two", { senderTime: msTimestamp(t) });
    assert.deepEqual(h.bodies("bob"), ["one", "two"]);
  });
});

test("a version-1 command batch (before senderTime) still decodes", () => {
  const commands = [
    { op: "receive" as const, mailbox: "bob", max: 3 },
    { op: "purge" as const, mailbox: "bob" },
  ];
  const bytes = encodeCommands(commands);
  assert.equal(bytes[0], 2);
  bytes[0] = 1; // these commands encode the same in both versions
  assert.deepEqual(decodeCommands(bytes), commands);
});

test("senderTime and the order settings survive the command encoding", () => {
  const commands = [
    { op: "send" as const, sender: "s", recipients: ["bob"], body: new Uint8Array([1]), senderTime: msTimestamp(5) + 3n },
    { op: "set-mailbox-config" as const, mailbox: "bob", config: { order: "sender-time" as const, reorderWindowMs: 250 } },
  ];
  assert.deepEqual(decodeCommands(encodeCommands(commands)), commands);
});

// A sender-time mailbox under load: senders stamp around the current time (late, on time, a bit
// ahead), consumers receive, nack and ack. The broker must match the model step by step, and every
// RECEIVE that takes several messages takes them in (senderTime, log position) order.
describe("sender-time order, property", () => {
  type Step =
    | { kind: "send"; advanceMs: number; offsetMs: number | undefined; logical: number }
    | { kind: "receive"; advanceMs: number; max: number }
    | { kind: "settle"; advanceMs: number; ack: boolean; nth: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant("send" as const), advanceMs: fc.integer({ min: 0, max: 400 }), offsetMs: fc.option(fc.integer({ min: -1500, max: 800 }), { nil: undefined }), logical: fc.integer({ min: 0, max: 2 }) }), weight: 5 },
    { arbitrary: fc.record({ kind: fc.constant("receive" as const), advanceMs: fc.integer({ min: 0, max: 1500 }), max: fc.integer({ min: 1, max: 4 }) }), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant("settle" as const), advanceMs: fc.integer({ min: 0, max: 300 }), ack: fc.boolean(), nth: fc.nat(5) }), weight: 1 },
  );

  test("matches the model and delivers in sender-time order", () => {
    let overtaken = 0; // RECEIVEs where a message stored later came first (the point of the mode)
    fc.assert(
      fc.property(fc.constantFrom(0, 300, 1000), fc.array(step, { minLength: 1, maxLength: 60 }), (windowMs, steps) => {
        const broker = new Broker(new MemoryKv());
        const model = new Model();
        let nowMs = 1_000_000;
        let index = 0;
        const leased: string[] = [];
        const apply = (command: BrokerCommand) => applyToBoth(broker, model, ++index, nowMs, command);
        apply({ op: "set-mailbox-config", mailbox: "q", config: { order: "sender-time", reorderWindowMs: windowMs, deliveriesMax: 100 } });
        for (const s of steps) {
          nowMs += s.advanceMs;
          if (s.kind === "send") {
            const command: BrokerCommand = { op: "send", sender: "s", recipients: ["q"], body: new Uint8Array([index & 0xff]) };
            if (s.offsetMs !== undefined) command.senderTime = msTimestamp(nowMs + s.offsetMs) + BigInt(s.logical);
            assert.ok(apply(command).ok);
          } else if (s.kind === "receive") {
            const result = apply({ op: "receive", mailbox: "q", max: s.max, visibilityMs: 500 });
            assert.ok(result.ok && "messages" in result);
            const times = result.messages.map((m) => m.senderTime!);
            for (let i = 1; i < times.length; i++) assert.ok(times[i - 1]! <= times[i]!, "one RECEIVE delivers in sender-time order");
            const stored = result.messages.map((m) => m.timestamp);
            if (stored.some((t, i) => i > 0 && t < stored[i - 1]!)) overtaken++;
            for (const m of result.messages) assert.ok(timestampMs(m.senderTime!) + windowMs <= nowMs, "nothing is delivered inside its window");
            leased.push(...result.messages.map((m) => m.id));
          } else if (leased.length > 0) {
            const [id] = leased.splice(s.nth % leased.length, 1);
            apply({ op: s.ack ? "ack" : "nack", mailbox: "q", ids: [id!] });
          }
          assert.deepEqual(broker.list({ op: "list", mailbox: "q", limit: 1000 }, msTimestamp(nowMs)), { ok: true, items: model.list("q", nowMs) });
        }
      }),
      { numRuns: 150 },
    );
    assert.ok(overtaken > 0, "the generator makes late, earlier-stamped messages overtake");
  });
});

// A log-ordered mailbox: fresh messages are read from the records after the mailbox's fresh
// cursor, returned ones (NACK, lease expiry, ended delays) from the ready index, and RECEIVE
// merges the two by log position. Sends, delayed sends (at and beyond the cursor), TTLs, leases
// that expire, NACK with and without delay, EXTEND, ACK and dead letters, checked against the
// model at every step (results and LIST of the mailbox and its dead-letter mailbox).
describe("log order, fresh cursor, property", () => {
  type Step =
    | { kind: "send"; advanceMs: number; delayMs: number; ttlMs: number; id: string | undefined }
    | { kind: "receive"; advanceMs: number; max: number }
    | { kind: "settle"; advanceMs: number; op: "ack" | "nack" | "nack-delay" | "extend"; nth: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant("send" as const),
        advanceMs: fc.integer({ min: 0, max: 200 }),
        delayMs: fc.constantFrom(0, 0, 0, 150, 600),
        ttlMs: fc.constantFrom(0, 0, 0, 900),
        id: fc.option(fc.constantFrom("c1", "c2", "c3", "c4"), { nil: undefined }),
      }),
      weight: 5,
    },
    { arbitrary: fc.record({ kind: fc.constant("receive" as const), advanceMs: fc.integer({ min: 0, max: 500 }), max: fc.integer({ min: 1, max: 5 }) }), weight: 3 },
    {
      arbitrary: fc.record({
        kind: fc.constant("settle" as const),
        advanceMs: fc.integer({ min: 0, max: 150 }),
        op: fc.constantFrom("ack" as const, "nack" as const, "nack-delay" as const, "extend" as const),
        nth: fc.nat(5),
      }),
      weight: 3,
    },
  );

  test("matches the model with returned messages interleaved with fresh ones", () => {
    let merged = 0; // RECEIVEs that took a returned message and a fresh one
    let delayedAmongFresh = 0; // RECEIVEs that took an ended-delay message and a fresh one
    fc.assert(
      fc.property(fc.constantFrom<"drop" | "dead-letter">("drop", "dead-letter"), fc.array(step, { minLength: 1, maxLength: 60 }), (expiry, steps) => {
        const config = { dedupeWindowMs: 700, promoteMax: 3 };
        const broker = new Broker(new MemoryKv(), config);
        const model = new Model(config);
        let nowMs = 1_000_000;
        let index = 0;
        const leased: string[] = [];
        const delayedIds = new Set<string>();
        const apply = (command: BrokerCommand) => applyToBoth(broker, model, ++index, nowMs, command);
        apply({ op: "set-mailbox-config", mailbox: "q", config: { deliveriesMax: 3, visibilityMs: 300, expiry } });
        for (const s of steps) {
          nowMs += s.advanceMs;
          if (s.kind === "send") {
            const command: BrokerCommand = { op: "send", sender: "s", recipients: ["q"], body: new Uint8Array([index & 0xff]) };
            if (s.delayMs > 0) command.delayMs = s.delayMs;
            if (s.ttlMs > 0) command.ttlMs = s.ttlMs;
            if (s.id !== undefined) command.id = s.id;
            const result = apply(command);
            if (result.ok && "id" in result && s.delayMs > 0 && !result.duplicate) delayedIds.add(result.id);
          } else if (s.kind === "receive") {
            const result = apply({ op: "receive", mailbox: "q", max: s.max });
            assert.ok(result.ok && "messages" in result);
            const stamps = result.messages.map((m) => m.timestamp);
            for (let i = 1; i < stamps.length; i++) assert.ok(stamps[i - 1]! <= stamps[i]!, "one RECEIVE delivers in log order");
            const first = result.messages.filter((m) => m.deliveries === 1);
            if (first.length > 0 && first.length < result.messages.length) merged++;
            if (first.some((m) => delayedIds.has(m.id)) && first.some((m) => !delayedIds.has(m.id))) delayedAmongFresh++;
            leased.push(...result.messages.map((m) => m.id));
          } else if (leased.length > 0) {
            const id = leased[s.nth % leased.length]!;
            if (s.op !== "extend") leased.splice(s.nth % leased.length, 1);
            if (s.op === "extend") apply({ op: "extend", mailbox: "q", ids: [id], visibilityMs: 400 });
            else if (s.op === "nack-delay") apply({ op: "nack", mailbox: "q", ids: [id], delayMs: 200 });
            else apply({ op: s.op, mailbox: "q", ids: [id] });
          }
          for (const name of ["q", "q:dlq"]) {
            assert.deepEqual(broker.list({ op: "list", mailbox: name, limit: 1000 }, msTimestamp(nowMs)), { ok: true, items: model.list(name, nowMs) });
          }
        }
      }),
      { numRuns: 200 },
    );
    assert.ok(merged > 0, "the generator interleaves returned and fresh messages in one RECEIVE");
    assert.ok(delayedAmongFresh > 0, "the generator delivers ended delays among fresh messages");
  });
});
