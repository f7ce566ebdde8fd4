// The chaos suite: a real 3-node cluster under a seeded schedule of faults (chaos.ts), its
// history checked against the contract (contract.ts). The seed is printed; FERRY_CHAOS_SEED=<n>
// replays its schedule, FERRY_CHAOS_LONG=1 runs a longer schedule (FERRY_CHAOS_FAULT_MS sets
// the length exactly).
import assert from "node:assert/strict";
import { test } from "node:test";
import { runChaos } from "./chaos.js";

const DEFAULT_FAULT_MS = 20_000;
const LONG_FAULT_MS = 180_000;

const seed = process.env.FERRY_CHAOS_SEED ? Number(process.env.FERRY_CHAOS_SEED) : Math.floor(Math.random() * 2 ** 31);
const faultMs = process.env.FERRY_CHAOS_FAULT_MS ? Number(process.env.FERRY_CHAOS_FAULT_MS) : process.env.FERRY_CHAOS_LONG === "1" ? LONG_FAULT_MS : DEFAULT_FAULT_MS;

test(`chaos: partitions, one-way links, kill -9, pauses, clock jumps; the contract holds (seed ${seed})`, { timeout: faultMs + 180_000 }, async (t) => {
  t.diagnostic(`seed ${seed}: replay with FERRY_CHAOS_SEED=${seed}`);
  const report = await runChaos({ seed, faultMs, log: (line) => t.diagnostic(line) });
  t.diagnostic(`${report.acknowledged} sends acknowledged, ${report.delivered} deliveries, ${report.sendErrors} send errors retried, ${report.receiveErrors} receive/ack errors`);
  assert.ok(report.acknowledged > 0, "some sends were acknowledged");
  assert.deepEqual(report.problems, [], `contract violated (seed ${seed}; replay with FERRY_CHAOS_SEED=${seed})\nschedule:\n${report.schedule.join("\n")}\n${report.dump}`);
});
