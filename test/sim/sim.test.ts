// The simulator against the real Raft core: a fixed batch of seeds over 3, 5 and 7 nodes must
// show no violation while faults and commits really happen; a seed replays exactly; the CLI
// prints its summary line and a replay command.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runCli } from "./cli.js";
import { runSimulation, type SimulationStats } from "./simulation.js";

const SEEDS_PER_SIZE = 100;
const STEPS = 1200;

test(`${3 * SEEDS_PER_SIZE} seeds on 3, 5 and 7 nodes: no violation, and faults and commits happen`, async () => {
  const totals = new Map<string, number>();
  let committed = 0;
  let faults = 0;
  const failures: string[] = [];
  for (const nodes of [3, 5, 7]) {
    for (let seed = 1; seed <= SEEDS_PER_SIZE; seed++) {
      const result = await runSimulation({ seed, nodes, steps: STEPS });
      if (result.violations.length > 0) {
        failures.push(`seed ${seed} (${nodes} nodes): ${result.violations[0]} -- npm run sim -- --seeds 1 --from ${seed} --nodes ${nodes}`);
      }
      committed += result.committedProposals;
      faults += result.faultsInjected;
      for (const [name, value] of Object.entries(result.stats)) totals.set(name, (totals.get(name) ?? 0) + value);
    }
  }
  assert.deepEqual(failures, []);
  assert.ok(committed > 0 && faults > 0, `committed ${committed}, faults ${faults}`);
  // Every kind of fault and operation the simulator claims to inject happened somewhere.
  const expected: Array<keyof SimulationStats> = [
    "partitions", "crashes", "powerLosses", "tornWrites", "pauses", "clockChanges", "clockJumps", "messagesLost", "messagesCut",
    "messagesDuplicated", "leadersElected", "transfers", "confChangesApplied", "nodesAdded", "nodesRemoved",
    "snapshotsInstalled", "readsAnswered",
  ];
  for (const name of expected) assert.ok((totals.get(name) ?? 0) > 0, `no ${name} in the whole batch`);
});

test("a seed replays exactly, with or without its trace", async () => {
  const first = await runSimulation({ seed: 4711, nodes: 5, steps: 600, trace: true });
  const second = await runSimulation({ seed: 4711, nodes: 5, steps: 600, trace: true });
  const untraced = await runSimulation({ seed: 4711, nodes: 5, steps: 600 });
  assert.ok(first.trace.length > 1000);
  assert.deepEqual(second.trace, first.trace);
  assert.deepEqual({ ...untraced, trace: [] }, { ...first, trace: [] });
  assert.deepEqual(untraced.trace, []);
  const other = await runSimulation({ seed: 4712, nodes: 5, steps: 600, trace: true });
  assert.notDeepEqual(other.trace, first.trace);
});

test("the trace has one readable line per event", async () => {
  const { trace } = await runSimulation({ seed: 3, nodes: 3, steps: 400, trace: true });
  for (const event of ["start", "send", "deliver", "persist", "propose", "role", "tick"]) {
    assert.ok(trace.some((line) => line.slice(7).startsWith(`${event} `)), `no '${event}' line`);
  }
  assert.match(trace[0]!, /^ {5}0 start seed=3 voters=1,2,3 /);
});

test("the CLI prints a summary as its last line and exits 0 when all seeds pass", async () => {
  const lines: string[] = [];
  assert.equal(await runCli(["--seeds", "3", "--from", "10", "--steps", "300"], (line) => lines.push(line)), 0);
  assert.match(lines.at(-1)!, /^sim: 3 seeds, 0 violations, \d+ proposals committed, \d+ faults injected$/);
});

test("the CLI prints the failing seed, its replay command and its trace, and exits 1", async () => {
  const lines: string[] = [];
  const code = await runCli(["--seeds", "20", "--nodes", "3", "--bug", "skipVoteLogCheck", "--profile", "hunt"], (line) => lines.push(line));
  assert.equal(code, 1);
  const replay = lines.find((line) => line.startsWith("replay: "));
  assert.match(replay!, /^replay: npm run sim -- --seeds 1 --from \d+ --nodes 3 --profile hunt --bug skipVoteLogCheck$/);
  assert.ok(lines.some((line) => line.startsWith("trace (")));
  assert.match(lines.at(-1)!, /^sim: 20 seeds, [1-9]\d* violations, /);
});

test("the CLI refuses bad arguments with exit code 2", async () => {
  const lines: string[] = [];
  assert.equal(await runCli(["--nodes", "4"], (line) => lines.push(line)), 2);
  assert.equal(await runCli(["--bug", "nope"], (line) => lines.push(line)), 2);
  assert.equal(await runCli(["--seeds", "x"], (line) => lines.push(line)), 2);
});
