// The leader applies the commands it holds instead of decoding the entry it encoded from them,
// when roundTripsExactly says the two are the same (src/node/node.ts, applyEntry). A difference
// would split the replicas: the leader's state would not be what its followers, or its own WAL
// replay, build. These properties hold that claim against the encoding and against two brokers,
// one fed either way, with the values the encoding does not carry exactly mixed in (lone
// surrogates, -1, sender times outside 64 bits), and show that a broker fed the held commands
// regardless does end up different.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Broker, type BrokerCommand, msTimestamp } from "../../src/broker/broker.js";
import { decodeCommands, encodeCommands, roundTripsExactly } from "../../src/broker/commands.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";
import { StoredDelivery } from "../../src/broker/stored-delivery.js";
import { toBrokerCommand } from "../../src/node/requests.js";
import { dump, PROPERTY_CONFIG, PROPERTY_START_MS } from "./harness.js";

const CONFIG = PROPERTY_CONFIG;
const START_MS = PROPERTY_START_MS;

// Mostly names the broker accepts; now and then one the UTF-8 round trip changes (a lone
// surrogate) or one that is merely not ASCII.
const LONE = "\ud800";
const odd = (usual: fc.Arbitrary<string>) =>
  fc.oneof({ arbitrary: usual, weight: 20 }, { arbitrary: usual.map((s) => s + LONE), weight: 1 }, { arbitrary: usual.map((s) => `${s}é`), weight: 1 });
const mailbox = odd(fc.constantFrom("a", "b", "a:dlq"));
const id = odd(fc.constantFrom("i1", "i2", "i3"));
const number = (...usual: number[]) =>
  fc.oneof({ arbitrary: fc.constantFrom<number | undefined>(undefined, ...usual), weight: 12 }, { arbitrary: fc.constant(-1), weight: 1 });
const senderTime = fc.oneof(
  { arbitrary: fc.constant<bigint | undefined>(undefined), weight: 4 },
  { arbitrary: fc.integer({ min: 0, max: 6000 }).map((ms) => msTimestamp(START_MS + ms)), weight: 2 },
  { arbitrary: fc.constantFrom(-1n, 1n << 64n), weight: 1 },
);

function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

// The node builds commands from requests with optional fields present and undefined
// (toBrokerCommand); decoding leaves them out. Half the generated commands keep such fields.
const withOrWithoutUndefined = <T extends object>(arbitrary: fc.Arbitrary<T>) =>
  fc.tuple(arbitrary, fc.boolean()).map(([value, keep]) => (keep ? value : defined(value)));

const send = fc
  .record({
    sender: odd(fc.constant("s")),
    recipients: fc.array(mailbox, { minLength: 1, maxLength: 2 }),
    body: fc.uint8Array({ maxLength: 8 }),
    id: fc.option(id, { nil: undefined }),
    headers: fc.option(fc.dictionary(odd(fc.constantFrom("h", "k")), odd(fc.constantFrom("v", "w")), { maxKeys: 2 }), { nil: undefined }),
    delayMs: number(0, 500),
    ttlMs: number(0, 2000),
    senderTime,
  })
  .map((fields): BrokerCommand => ({ op: "send", ...fields }))
  .chain((command) => withOrWithoutUndefined(fc.constant(command)));
const receive = fc
  .record({
    mailbox,
    max: fc.integer({ min: 1, max: 3 }),
    visibilityMs: number(500, 2500),
    consumer: fc.option(odd(fc.constant("c")), { nil: undefined }),
    ack: fc.option(fc.array(id, { minLength: 1, maxLength: 3 }), { nil: undefined }),
    // Lease names of entries 1-3's first batch, which the short runs' leases often are.
    ackLeases: fc.option(fc.array(odd(fc.constantFrom("1.0.1001500", "2.0.1002000", "3.0.1003000")), { minLength: 1, maxLength: 2 }), { nil: undefined }),
  })
  .map((fields): BrokerCommand => ({ op: "receive", ...fields }))
  .chain((command) => withOrWithoutUndefined(fc.constant(command)));
const settle = fc
  .record({ op: fc.constantFrom("ack" as const, "nack" as const), mailbox, ids: fc.array(id, { minLength: 1, maxLength: 3 }), delayMs: number(0, 700) })
  .map((fields): BrokerCommand => {
    const { delayMs, ...rest } = fields;
    return defined(rest.op === "nack" ? { ...rest, delayMs } : rest) as BrokerCommand;
  });
const other = fc.constantFrom<BrokerCommand>(
  { op: "extend", mailbox: "a", ids: ["i1"], visibilityMs: 2000 },
  { op: "purge", mailbox: "b" },
  { op: "set-mailbox-config", mailbox: "a", config: { ttlMs: 1500 } },
);
const command = fc.oneof({ arbitrary: send, weight: 5 }, { arbitrary: receive, weight: 3 }, { arbitrary: settle, weight: 3 }, { arbitrary: other, weight: 1 });
const batches = fc.array(fc.record({ advanceMs: fc.integer({ min: 0, max: 2500 }), commands: fc.array(command, { minLength: 1, maxLength: 4 }) }), {
  minLength: 1,
  maxLength: 30,
});

// Results and commands with their bytes and bigints spelled out, so deepEqual compares values.
function plain(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Array.from(v) : v)));
}

// Applies each batch to two brokers: the leader's (held commands when vouched for, else the
// decoded entry; or always the held ones, to plant the bug) and a follower's (always decoded).
function replay(steps: Array<{ advanceMs: number; commands: BrokerCommand[] }>, trustAlways = false) {
  const leader = new Broker(new MemoryKv(), CONFIG);
  const follower = new Broker(new MemoryKv(), CONFIG);
  let nowMs = START_MS;
  let index = 0;
  let held = 0;
  const results: Array<[unknown, unknown]> = [];
  for (const step of steps) {
    nowMs += step.advanceMs;
    index++;
    const decoded = decodeCommands(encodeCommands(step.commands));
    const useHeld = trustAlways || roundTripsExactly(step.commands);
    if (useHeld) held++;
    const timestamp = msTimestamp(nowMs);
    results.push([plain(leader.apply(index, timestamp, useHeld ? step.commands : decodeCommands(encodeCommands(step.commands)))), plain(follower.apply(index, timestamp, decoded))]);
  }
  return { leaderState: dump((leader as unknown as { kv: MemoryKv }).kv), followerState: dump((follower as unknown as { kv: MemoryKv }).kv), results, held };
}

describe("the leader's held commands", () => {
  test("what roundTripsExactly vouches for decodes back field for field", () => {
    let vouched = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.array(command, { minLength: 1, maxLength: 4 }), (commands) => {
        if (!roundTripsExactly(commands)) {
          refused++;
          return;
        }
        vouched++;
        assert.deepEqual(plain(decodeCommands(encodeCommands(commands))), plain(commands));
      }),
      { numRuns: 2000 },
    );
    // Both answers occur, so neither half of the property is vacuous.
    assert.ok(vouched > 100 && refused > 100, `vouched ${vouched}, refused ${refused}`);
  });

  test("values the encoding changes are refused", () => {
    const base = { op: "send" as const, sender: "s", recipients: ["a"], body: new Uint8Array(1) };
    const changed: BrokerCommand[] = [
      { ...base, sender: `s${LONE}` },
      { ...base, recipients: [`a${LONE}`] },
      { ...base, id: `i${LONE}` },
      { ...base, headers: { [`h${LONE}`]: "v" } },
      { ...base, headers: { h: `v${LONE}` } },
      { ...base, delayMs: -1 },
      { ...base, ttlMs: -1 },
      { ...base, senderTime: -1n },
      { ...base, senderTime: 1n << 64n },
      { op: "receive", mailbox: "a", max: 1, visibilityMs: -1 },
      { op: "receive", mailbox: "a", max: 1, consumer: LONE },
      { op: "receive", mailbox: "a", max: 1, ack: ["i1", LONE] },
      { op: "nack", mailbox: "a", ids: ["i1"], delayMs: -1 },
      { op: "ack", mailbox: "a", ids: [LONE] },
    ];
    for (const one of changed) {
      assert.notDeepEqual(plain(decodeCommands(encodeCommands([one]))), plain([one]), `the encoding changes ${JSON.stringify(plain(one))}`);
      assert.equal(roundTripsExactly([one]), false, `refused: ${JSON.stringify(plain(one))}`);
    }
    // The usual commands, non-ASCII text included, are vouched for.
    assert.equal(roundTripsExactly([{ ...base, id: "é", headers: { h: "ü" }, delayMs: 0, senderTime: 5n }, { op: "ack", mailbox: "a", ids: ["x"] }]), true);
    // A command off the hot path is decoded.
    assert.equal(roundTripsExactly([{ op: "purge", mailbox: "a" }]), false);
  });

  test("a node of command set 1 refuses a RECEIVE that carries acks, as a node before it did; other commands decode", () => {
    const acking: BrokerCommand = { op: "receive", mailbox: "a", max: 1, ack: ["i1"] };
    const older: BrokerCommand[] = [{ op: "receive", mailbox: "a", max: 1 }, { op: "ack", mailbox: "a", ids: ["i1"] }];
    assert.throws(() => decodeCommands(encodeCommands([acking]), 1), /unknown command tag 9/);
    assert.deepEqual(plain(decodeCommands(encodeCommands(older), 1)), plain(older));
    assert.deepEqual(plain(decodeCommands(encodeCommands([acking]))), plain([acking]));
  });

  test("a node of command set 2 refuses a RECEIVE that acks lease names, as a node before it did; one that carries ids decodes", () => {
    const byLease: BrokerCommand[] = [
      { op: "receive", mailbox: "a", max: 1, ackLeases: ["1.0.5"] },
      { op: "receive", mailbox: "a", max: 1, ack: ["i1"], ackLeases: ["1.0.5", "2.1.7"] },
    ];
    const acking: BrokerCommand[] = [{ op: "receive", mailbox: "a", max: 1, ack: ["i1"] }];
    for (const command of byLease) {
      assert.throws(() => decodeCommands(encodeCommands([command]), 2), /unknown command tag 10/);
      assert.deepEqual(plain(decodeCommands(encodeCommands([command]))), plain([command]));
    }
    assert.deepEqual(plain(decodeCommands(encodeCommands(acking), 2)), plain(acking));
  });

  test("a broker fed the held commands ends in the state and answers of one fed the decoded entry", () => {
    let held = 0;
    fc.assert(
      fc.property(batches, (steps) => {
        const run = replay(steps);
        held += run.held;
        assert.deepEqual(run.results.map(([leader]) => leader), run.results.map(([, follower]) => follower));
        assert.deepEqual(run.leaderState, run.followerState);
      }),
      { numRuns: 300 },
    );
    assert.ok(held > 400, `held commands were applied (${held} entries)`);
  });

  // The planted bug: trusting the held commands whatever they hold. A SEND with a ttlMs of -1 is
  // refused on the leader and stored without a ttl everywhere else (the encoding reads -1 back as
  // absent), and the property finds such a split.
  test("trusting every held command splits the replicas, and the property finds it", () => {
    const steps = [{ advanceMs: 0, commands: [{ op: "send", sender: "s", recipients: ["a"], body: new Uint8Array(1), ttlMs: -1 } as BrokerCommand] }];
    const trusted = replay(steps, true);
    assert.notDeepEqual(trusted.leaderState, trusted.followerState);
    const checked = replay(steps);
    assert.deepEqual(checked.leaderState, checked.followerState);
    assert.throws(() =>
      fc.assert(
        fc.property(batches, (generated) => {
          const run = replay(generated, true);
          assert.deepEqual(run.leaderState, run.followerState);
          assert.deepEqual(run.results.map(([leader]) => leader), run.results.map(([, follower]) => follower));
        }),
        { numRuns: 300, seed: 1 },
      ),
    );
  });
});

// A follower's apply builds no replies (Broker.apply's `replies`, false where no request waits,
// src/node/node.ts applyEntry): RECEIVE then reads only the head of each record it leases. The
// state must be the same as with replies, or the replicas split.
describe("an apply without replies", () => {
  function both(steps: Array<{ advanceMs: number; commands: BrokerCommand[] }>) {
    const answering = new Broker(new MemoryKv(), CONFIG);
    const silent = new Broker(new MemoryKv(), CONFIG);
    let nowMs = START_MS;
    let index = 0;
    let received = 0;
    for (const step of steps) {
      nowMs += step.advanceMs;
      index++;
      const timestamp = msTimestamp(nowMs);
      const withReplies = answering.apply(index, timestamp, step.commands);
      const without = silent.apply(index, timestamp, step.commands, false);
      step.commands.forEach((command, position) => {
        const answer = withReplies[position]!;
        const quiet = without[position]!;
        if (command.op === "receive" && answer.ok && quiet.ok) {
          received += (answer as { messages: unknown[] }).messages.length;
          // RECEIVE lists nothing without replies; everything else answers the same.
          assert.deepEqual((quiet as { messages: unknown[] }).messages, []);
        } else {
          assert.deepEqual(plain(quiet), plain(answer));
        }
      });
    }
    return { answering: dump((answering as unknown as { kv: MemoryKv }).kv), silent: dump((silent as unknown as { kv: MemoryKv }).kv), received };
  }

  test("leaves the state of an apply with replies", () => {
    let received = 0;
    fc.assert(
      fc.property(batches, (steps) => {
        const run = both(steps);
        received += run.received;
        assert.deepEqual(run.silent, run.answering);
      }),
      { numRuns: 300 },
    );
    // About 300-380 over the 300 runs: the property compares stores that did lease messages.
    assert.ok(received > 100, `messages were received (${received})`);
  });
});

// A leader's RECEIVE for a binary-protocol client (recordReplies, src/node/requests.ts) answers
// with its messages' stored records (src/broker/stored-delivery.ts): the same messages, field by
// field, as the plain reply, and the same state.
describe("a RECEIVE answered with stored records", () => {
  test("answers what the plain RECEIVE answers and leaves the same state", () => {
    let stored = 0;
    fc.assert(
      fc.property(batches, (steps) => {
        const asRecords = new Broker(new MemoryKv(), CONFIG);
        const asObjects = new Broker(new MemoryKv(), CONFIG);
        let nowMs = START_MS;
        let index = 0;
        for (const step of steps) {
          nowMs += step.advanceMs;
          index++;
          const timestamp = msTimestamp(nowMs);
          const flagged = step.commands.map((command) => (command.op === "receive" ? { ...command, recordReplies: true } : command));
          const records = asRecords.apply(index, timestamp, flagged);
          const objects = asObjects.apply(index, timestamp, step.commands);
          records.forEach((result, position) => {
            const messages = (result as { messages?: unknown[] }).messages;
            const expanded = messages?.map((message) => {
              if (!(message instanceof StoredDelivery)) return message;
              stored++;
              return message.plain();
            });
            assert.deepEqual(plain(messages === undefined ? result : { ...result, messages: expanded }), plain(objects[position]));
          });
        }
        assert.deepEqual(dump((asRecords as unknown as { kv: MemoryKv }).kv), dump((asObjects as unknown as { kv: MemoryKv }).kv));
      }),
      { numRuns: 200 },
    );
    // 98-141 over 25 runs (session 39; the generator's RECEIVEs carry acks since session 38, which
    // leaves fewer messages to lease): a check that the property compared record replies at all,
    // not a count the random batches must reach (at 100 it failed one CI run in ~12).
    assert.ok(stored > 40, `messages were answered as records (${stored})`);
  });

  test("is asked for by the binary protocol's sessions only", () => {
    const request = { op: "receive" as const, mailbox: "a", max: 5 };
    assert.equal((toBrokerCommand(request, { identity: "c", protocol: "binary" }) as { recordReplies?: boolean }).recordReplies, true);
    assert.equal((toBrokerCommand(request, { identity: "c", protocol: "text" }) as { recordReplies?: boolean }).recordReplies, false);
    assert.equal((toBrokerCommand(request, { identity: "c" }) as { recordReplies?: boolean }).recordReplies, false);
  });
});
