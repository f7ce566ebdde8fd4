// Pending batch keys: one RECEIVE (or NACK with delay, or EXTEND) lists its ids in one pending
// key, and ACK / NACK / EXTEND leave the entry stale; a stale entry is skipped when it comes due,
// and promoteMax counts the ids examined. Checked against the reference model at every step
// (results, LIST of the mailbox and its dead-letter mailbox, nextVisibleAt) on memory and LMDB,
// with a byte-identical replica on the other store.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { Broker, type BrokerCommand, msTimestamp } from "../../src/broker/broker.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { mailboxPrefix, PENDING } from "../../src/broker/records.js";
import { LmdbKv } from "../../src/storage/kv-lmdb.js";
import { dump, Harness } from "./harness.js";
import { Model } from "./model.js";

type Settle = "ack" | "nack" | "nack-delay" | "extend";
type Step =
  | { kind: "send"; count: number; delayMs: number; ttlMs: number }
  | { kind: "receive"; max: number; visibilityMs: number }
  | { kind: "settle"; op: Settle; pick: number[] }
  | { kind: "advance"; ms: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant("send" as const),
      count: fc.integer({ min: 1, max: 6 }),
      delayMs: fc.constantFrom(0, 0, 0, 120),
      ttlMs: fc.constantFrom(0, 0, 0, 700),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("receive" as const), max: fc.integer({ min: 1, max: 8 }), visibilityMs: fc.constantFrom(100, 200, 300) }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("settle" as const),
      op: fc.constantFrom<Settle>("ack", "ack", "nack", "nack-delay", "extend"),
      pick: fc.array(fc.nat(20), { minLength: 1, maxLength: 5 }),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ kind: fc.constant("advance" as const), ms: fc.constantFrom(50, 100, 150, 300) }), weight: 3 },
);

const directories: string[] = [];
after(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function lmdb(): LmdbKv {
  const directory = mkdtempSync(join(tmpdir(), "ferry-pending-"));
  directories.push(directory);
  return new LmdbKv({ path: directory });
}

// The earliest time a leased or delayed message of the model becomes visible.
function modelNextVisibleMs(model: Model, mailbox: string): number | undefined {
  let earliest: number | undefined;
  for (const message of model.mailboxes.get(mailbox)?.messages ?? []) {
    if (message.state !== "ready" && (earliest === undefined || message.visibleAtMs < earliest)) earliest = message.visibleAtMs;
  }
  return earliest;
}

describe("pending batch keys, property", () => {
  for (const store of ["memory", "lmdb"] as const) {
    test(`stale entries are skipped and promoteMax counts ids (${store})`, async () => {
      const seen = { ackThenDue: 0, extendThenDue: 0, nackThenReceive: 0, mixedBatch: 0, batchDeadLetters: 0, cutShort: 0 };
      const kvs: LmdbKv[] = [];
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom<"drop" | "dead-letter">("drop", "dead-letter"),
          fc.constantFrom(1, 3, 10_000),
          fc.array(step, { minLength: 20, maxLength: 60, size: "max" }),
          async (expiry, promoteMax, steps) => {
            const config = { promoteMax, dedupeWindowMs: 500 };
            const primaryKv = store === "memory" ? new MemoryKv() : lmdb();
            const replicaKv = store === "memory" ? lmdb() : new MemoryKv();
            for (const kv of [primaryKv, replicaKv]) if (kv instanceof LmdbKv) kvs.push(kv);
            const broker = new Broker(primaryKv, config);
            const replica = new Broker(replicaKv, config);
            const model = new Model(config);
            let nowMs = 1_000_000;
            let index = 0;
            let leased: string[] = [];
            // Lease ends left behind by ACK / EXTEND / NACK, to count stale entries coming due.
            const leftBehind: Array<{ op: Settle; atMs: number }> = [];
            const nacked = new Set<string>();
            const batchSettled = new Map<string, { batch: number; op: Settle }>();
            const batchOf = new Map<string, number>();
            let batches = 0;
            const apply = (command: BrokerCommand) => {
              index++;
              const actual = broker.apply(index, msTimestamp(nowMs), [command]).map(plain);
              replica.apply(index, msTimestamp(nowMs), [command]);
              const expected = model.apply(index, msTimestamp(nowMs), [command]);
              assert.deepEqual(
                actual.map((r) => (r.ok ? r : { ok: false, code: r.code })),
                expected,
              );
              return actual[0]!;
            };
            apply({ op: "set-mailbox-config", mailbox: "q", config: { deliveriesMax: 2, visibilityMs: 200, expiry } });
            for (const s of steps) {
              if (s.kind === "advance") nowMs += s.ms;
              else if (s.kind === "send") {
                for (let i = 0; i < s.count; i++) {
                  const command: BrokerCommand = { op: "send", sender: "s", recipients: ["q"], body: new Uint8Array([i]) };
                  if (s.delayMs > 0) command.delayMs = s.delayMs;
                  if (s.ttlMs > 0) command.ttlMs = s.ttlMs;
                  apply(command);
                }
              } else if (s.kind === "receive") {
                const dlqBefore = model.mailboxes.get("q:dlq")?.messages.length ?? 0;
                if (leftBehind.some((left) => left.atMs <= nowMs && left.op === "ack")) seen.ackThenDue++;
                if (leftBehind.some((left) => left.atMs <= nowMs && left.op === "extend")) seen.extendThenDue++;
                const pendingBefore = promoteMax < 10_000 ? modelDueCount(model, nowMs) : 0;
                const result = apply({ op: "receive", mailbox: "q", max: s.max, visibilityMs: s.visibilityMs });
                assert.ok(result.ok && "messages" in result);
                if (result.messages.some((m) => nacked.has(m.id))) seen.nackThenReceive++;
                if ((model.mailboxes.get("q:dlq")?.messages.length ?? 0) >= dlqBefore + 2) seen.batchDeadLetters++;
                if (pendingBefore > promoteMax) seen.cutShort++;
                const batch = batches++;
                for (const m of result.messages) batchOf.set(m.id, batch);
                leased = [...leased.filter((id) => !result.messages.some((m) => m.id === id)), ...result.messages.map((m) => m.id)];
                for (let i = leftBehind.length - 1; i >= 0; i--) if (leftBehind[i]!.atMs <= nowMs) leftBehind.splice(i, 1);
              } else if (leased.length > 0) {
                const ids = [...new Set(s.pick.map((n) => leased[n % leased.length]!))];
                const ends = ids.map((id) => model.mailboxes.get("q")?.messages.find((m) => m.id === id)?.visibleAtMs ?? 0);
                let command: BrokerCommand;
                if (s.op === "extend") command = { op: "extend", mailbox: "q", ids, visibilityMs: 250 };
                else if (s.op === "nack-delay") command = { op: "nack", mailbox: "q", ids, delayMs: 150 };
                else command = { op: s.op, mailbox: "q", ids };
                const result = apply(command);
                if (result.ok && "count" in result && result.count > 0) {
                  for (const atMs of ends) if (atMs > nowMs) leftBehind.push({ op: s.op, atMs });
                  for (const id of ids) {
                    if (s.op === "nack") nacked.add(id);
                    const batch = batchOf.get(id);
                    if (batch === undefined) continue;
                    const other = [...batchSettled.entries()].find(([otherId, v]) => otherId !== id && v.batch === batch && v.op !== s.op);
                    if (other !== undefined) seen.mixedBatch++;
                    batchSettled.set(id, { batch, op: s.op });
                  }
                }
                if (s.op !== "extend") leased = leased.filter((id) => !ids.includes(id));
              }
              for (const name of ["q", "q:dlq"]) {
                assert.deepEqual(broker.list({ op: "list", mailbox: name, limit: 1000 }, msTimestamp(nowMs)), { ok: true, items: model.list(name, nowMs) });
              }
              // nextVisibleAt: exact while it may examine every entry, never later than the truth.
              const expected = modelNextVisibleMs(model, "q");
              const actual = broker.nextVisibleAt("q");
              if (promoteMax === 10_000) assert.equal(actual, expected === undefined ? undefined : msTimestamp(expected));
              else if (expected !== undefined) assert.ok(actual !== undefined && actual <= msTimestamp(expected));
              // With a horizon (a waiter's end of wait): nothing past it, the same before it.
              const horizon = nowMs + 150;
              const within = broker.nextVisibleAt("q", horizon);
              if (expected === undefined || expected >= horizon) assert.ok(within === undefined || (promoteMax !== 10_000 && within < msTimestamp(horizon)));
              else if (promoteMax === 10_000) assert.equal(within, msTimestamp(expected));
              else assert.ok(within !== undefined && within <= msTimestamp(expected));
            }
            assert.deepEqual(dump(primaryKv), dump(replicaKv), "replicas end byte-identical");
          },
        ),
        { numRuns: 100 },
      );
      for (const kv of kvs) await kv.close();
      for (const [name, count] of Object.entries(seen)) assert.ok(count > 0, `the generator reaches ${name}`);
    });
  }
});

// LMDB hands bodies out as Buffers; the model holds plain Uint8Arrays.
function plain<T>(result: T): T {
  if (result === null || typeof result !== "object" || !("messages" in result)) return result;
  const messages = (result as { messages: Array<{ body: Uint8Array }> }).messages;
  return { ...result, messages: messages.map((m) => ({ ...m, body: Uint8Array.from(m.body) })) };
}

function modelDueCount(model: Model, nowMs: number): number {
  return (model.mailboxes.get("q")?.messages ?? []).filter((m) => m.state !== "ready" && m.visibleAtMs <= nowMs).length;
}

describe("pending batch keys", () => {
  const pendingKeys = (h: Harness, mailbox: string): number => {
    const prefix = mailboxPrefix(PENDING, mailbox);
    return dump(h.kv).filter(([key]) => key.startsWith(prefix)).length;
  };

  test("one RECEIVE writes one pending key; ACK leaves it until it comes due or the mailbox empties", () => {
    const h = new Harness();
    for (let i = 0; i < 5; i++) h.send("q", `m${i}`);
    const received = h.receive("q", 10, 1000);
    assert.equal(received.messages.length, 5);
    assert.equal(pendingKeys(h, "q"), 1);
    h.one({ op: "ack", mailbox: "q", ids: received.messages.slice(0, 3).map((m) => m.id) });
    assert.equal(pendingKeys(h, "q"), 1);
    assert.equal(h.broker.nextVisibleAt("q"), msTimestamp(h.nowMs + 1000));
    h.one({ op: "ack", mailbox: "q", ids: received.messages.slice(3).map((m) => m.id) });
    assert.equal(pendingKeys(h, "q"), 0, "an emptied mailbox drops its stale keys");
    assert.equal(h.broker.nextVisibleAt("q"), undefined);
  });

  test("nextVisibleAt before a horizon reads no pending key due after it", () => {
    // A drained mailbox whose last leases are still out: its earlier batches are acked (stale
    // keys due a visibility timeout later). A waiter asking about the next second reads none of
    // them, and gets the same answer as a full look would give within that second.
    const reads: string[] = [];
    const kv = new MemoryKv();
    const scan = kv.scan.bind(kv);
    kv.scan = (start, end, limit, reverse) => {
      const entries = scan(start, end, limit, reverse);
      for (const entry of entries) reads.push(entry.key);
      return entries;
    };
    const h = new Harness({}, kv);
    for (let i = 0; i < 20; i++) h.send("q", `m${i}`);
    for (let i = 0; i < 10; i++) {
      const batch = h.receive("q", 2, 30_000);
      if (i < 9) h.one({ op: "ack", mailbox: "q", ids: batch.messages.map((m) => m.id) });
    }
    assert.equal(pendingKeys(h, "q"), 10);
    const pending = mailboxPrefix(PENDING, "q");
    reads.length = 0;
    assert.equal(h.broker.nextVisibleAt("q", h.nowMs + 1000), undefined);
    assert.equal(reads.filter((key) => key.startsWith(pending)).length, 0, "no pending key read");
    assert.equal(h.broker.nextVisibleAt("q"), msTimestamp(h.nowMs + 30_000), "without a horizon: the live lease");
    assert.ok(reads.filter((key) => key.startsWith(pending)).length >= 10, "which reads the stale keys before it");
    h.advance(29_500);
    assert.equal(h.broker.nextVisibleAt("q", h.nowMs + 1000), msTimestamp(h.nowMs + 500), "the live lease, once within the horizon");
  });

  test("nextVisibleAt skips an acked batch and reports the next live lease", () => {
    const h = new Harness();
    h.send("q", "a");
    h.send("q", "b");
    const first = h.receive("q", 1, 1000);
    h.advance(10);
    const second = h.receive("q", 1, 5000);
    h.one({ op: "ack", mailbox: "q", ids: [first.messages[0]!.id] });
    assert.equal(pendingKeys(h, "q"), 2);
    assert.equal(h.broker.nextVisibleAt("q"), msTimestamp(h.nowMs + 5000));
    h.advance(1000);
    assert.equal(h.receive("q").messages.length, 0, "the stale entry comes due and is skipped");
    assert.equal(pendingKeys(h, "q"), 1);
    h.advance(4000);
    assert.deepEqual(
      h.receive("q").messages.map((m) => [m.id, m.deliveries]),
      [[second.messages[0]!.id, 2]],
    );
  });

  test("promoteMax bounds the ids examined; a key cut short keeps the rest", () => {
    const h = new Harness({ promoteMax: 2 });
    for (let i = 0; i < 5; i++) h.send("q", `m${i}`);
    h.receive("q", 10, 100);
    h.advance(100);
    assert.deepEqual(h.bodies("q"), ["m0", "m1"]);
    assert.deepEqual(h.bodies("q"), ["m2", "m3"]);
    assert.deepEqual(h.bodies("q"), ["m4"]);
  });
});
