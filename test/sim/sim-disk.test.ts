// The simulator over the real write-ahead log (storage model "disk"): every node's storage is a
// DiskRaftStorage over its own MemoryFileSystem, crashes drop, tear or bit-flip the write in
// flight, and restarts run the real recovery. A fixed batch of seeds must show no violation, and
// recoveries that cut off a torn tail must really have happened; a seed replays exactly.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runCli } from "./cli.js";
import { runSimulation, type SimulationStats } from "./simulation.js";

const SEEDS_PER_SIZE = 25;
const STEPS = 1200;

test(`${3 * SEEDS_PER_SIZE} seeds on the real WAL: no violation, and torn tails are recovered`, async () => {
  const totals = new Map<string, number>();
  const failures: string[] = [];
  let committed = 0;
  for (const nodes of [3, 5, 7]) {
    for (let seed = 1; seed <= SEEDS_PER_SIZE; seed++) {
      const result = await runSimulation({ seed, nodes, steps: STEPS, storage: "disk" });
      if (result.violations.length > 0) {
        failures.push(`seed ${seed} (${nodes} nodes): ${result.violations[0]} -- npm run sim -- --seeds 1 --from ${seed} --nodes ${nodes} --storage disk`);
      }
      committed += result.committedProposals;
      for (const [name, value] of Object.entries(result.stats)) totals.set(name, (totals.get(name) ?? 0) + value);
    }
  }
  assert.deepEqual(failures, []);
  assert.ok(committed > 0);
  const expected: Array<keyof SimulationStats> = [
    "crashes", "powerLosses", "tornWrites", "bitFlips", "tornTailRecoveries", "snapshotsInstalled", "nodesAdded", "nodesRemoved",
  ];
  for (const name of expected) assert.ok((totals.get(name) ?? 0) > 0, `no ${name} in the whole batch`);
});

test("a seed on the real WAL replays exactly", async () => {
  const first = await runSimulation({ seed: 4711, nodes: 5, steps: 600, trace: true, storage: "disk" });
  const second = await runSimulation({ seed: 4711, nodes: 5, steps: 600, trace: true, storage: "disk" });
  assert.ok(first.trace.some((line) => line.slice(7).startsWith("recover ")));
  assert.deepEqual(second.trace, first.trace);
  assert.deepEqual(second.stats, first.stats);
});

test("the CLI takes --storage disk, prints its counters and refuses an unknown model", async () => {
  const lines: string[] = [];
  assert.equal(await runCli(["--seeds", "2", "--steps", "300", "--storage", "disk"], (line) => lines.push(line)), 0);
  assert.match(lines.at(-1)!, /^sim: 2 seeds, 0 violations, /);
  assert.match(lines.at(-3)!, / tornTailRecoveries=\d+ /);
  assert.equal(await runCli(["--storage", "tape"], (line) => lines.push(line)), 2);
});
