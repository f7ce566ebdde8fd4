// The simulated network: delays, loss, duplication, and one-way and two-way partitions.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Message } from "../../src/raft/types.js";
import { type NetworkFaults, RELIABLE_NETWORK, SimNetwork } from "./network.js";
import { Random } from "./random.js";

function message(from: number, to: number, index = 0): Message {
  return { type: "append", from, to, term: 1, logTerm: 0, index, entries: [], commit: 0, reject: false, rejectHint: 0 };
}

function network(faults: NetworkFaults = RELIABLE_NETWORK) {
  const dropped: string[] = [];
  let duplicated = 0;
  const net = new SimNetwork(new Random(3), faults, {
    dropped: (m, reason) => dropped.push(`${m.from}->${m.to} ${reason}`),
    duplicated: () => duplicated++,
  });
  return { net, dropped, duplicated: () => duplicated };
}

function deliverAll(net: SimNetwork, steps: number): Message[] {
  const delivered: Message[] = [];
  for (let step = 0; step <= steps; step++) delivered.push(...net.deliverable(step));
  return delivered;
}

test("a reliable network delivers everything, never in the step it was sent", () => {
  const { net } = network();
  net.send(message(1, 2), 0);
  assert.deepEqual(net.deliverable(0), []);
  assert.equal(deliverAll(net, 10).length, 1);
  assert.equal(net.inFlightCount(), 0);
});

test("a partition drops messages in flight across it, both ways; heal restores", () => {
  const { net, dropped } = network();
  net.send(message(1, 2), 0);
  net.send(message(2, 1), 0);
  net.send(message(1, 3), 0);
  net.partition([[1], [2]]);
  assert.deepEqual(deliverAll(net, 10).map((m) => `${m.from}->${m.to}`), ["1->3"]);
  assert.deepEqual(dropped.sort(), ["1->2 link-down", "2->1 link-down"]);
  net.heal();
  net.send(message(1, 2), 20);
  assert.equal(deliverAll(net, 30).length, 1);
});

test("a one-way link: a->b is cut while b->a works", () => {
  const { net } = network();
  net.block(1, 2);
  net.send(message(1, 2), 0);
  net.send(message(2, 1), 0);
  assert.deepEqual(deliverAll(net, 10).map((m) => `${m.from}->${m.to}`), ["2->1"]);
  assert.equal(net.isBlocked(2, 1), false);
});

test("a bridge node talks to both sides of a partition", () => {
  const { net } = network();
  net.partition([[1, 2], [4, 5]]); // node 3 is in no group: it bridges
  for (const to of [1, 2, 4, 5]) net.send(message(3, to), 0);
  for (const from of [1, 5]) net.send(message(from, 3), 0);
  net.send(message(1, 5), 0);
  assert.equal(deliverAll(net, 10).length, 6);
});

test("loss, duplication and reordering happen at about their rates", () => {
  const faults = { ...RELIABLE_NETWORK, dropProbability: 0.2, duplicateProbability: 0.1, reorderProbability: 0.3, reorderDelayStepsMax: 20 };
  const { net, dropped, duplicated } = network(faults);
  for (let i = 0; i < 2_000; i++) net.send(message(1, 2, i), 0);
  const delivered = deliverAll(net, 100);
  assert.ok(dropped.length > 300 && dropped.length < 500, `dropped ${dropped.length}`);
  assert.ok(duplicated() > 100 && duplicated() < 250, `duplicated ${duplicated()}`);
  assert.equal(delivered.length, 2_000 - dropped.length + duplicated());
  const indexes = delivered.map((m) => m.index);
  assert.notDeepEqual(indexes, [...indexes].sort((a, b) => a - b)); // some overtook others
});
