// Every message's HLC timestamp increases with log order, also between messages of one entry
// (design §2: one total order, timestamps increasing with it).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Broker } from "../../src/broker/broker.js";
import type { BrokerCommand } from "../../src/broker/commands.js";
import { MemoryKv } from "../../src/broker/kv-memory.js";

const send = (recipient: string, body: string): BrokerCommand => ({ op: "send", sender: "s", recipients: [recipient], body: new TextEncoder().encode(body) });

test("messages of one entry get strictly increasing timestamps, across mailboxes too", () => {
  const broker = new Broker(new MemoryKv());
  const base = 1_000n << 16n;
  const results = broker.apply(1, base, [send("a", "1"), send("b", "2"), send("a", "3")]);
  const stamps = results.map((r) => (r.ok && "timestamp" in r ? (r.timestamp as bigint) : -1n));
  assert.deepEqual(stamps, [base, base + 1n, base + 2n]);
  const next = broker.apply(2, base + 3n, [send("a", "4")]);
  assert.ok(next[0]!.ok && "timestamp" in next[0]! && (next[0].timestamp as bigint) > stamps[2]!);
  const listed = broker.list({ op: "list", mailbox: "a" }, base + 4n);
  assert.ok(listed.ok);
  const listedStamps = listed.items.map((item) => item.timestamp);
  assert.deepEqual(listedStamps, [base, base + 2n, base + 3n]);
});
