// Each planted bug in the Raft core (RaftConfig.bugs) is found by the simulator within a bounded
// number of seeds, and the failing seed passes once the bug is taken out again: the checkers
// have teeth, and what they flag is the bug.
//
// The search uses the "hunt" fault profile (power loss inside vote persists, leaders crashing as
// they commit, isolated stale leaders that keep taking proposals, one entry per append), which
// makes the races these bugs open likely; with the default profile they take far more seeds.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { PlantedBugs } from "../../src/raft/types.js";
import { HUNT_PROFILE } from "./profile.js";
import { runSimulation, type SimulationResult } from "./simulation.js";

const SEEDS_SEARCHED_MAX = 2_000;
const STEPS = 1_200;

interface Found {
  seed: number;
  nodes: number;
  result: SimulationResult;
}

async function search(bug: keyof PlantedBugs): Promise<Found | undefined> {
  for (let seed = 1; seed <= SEEDS_SEARCHED_MAX; seed++) {
    const nodes = [3, 5, 7][seed % 3]!;
    const result = await runSimulation({ seed, nodes, steps: STEPS, profile: HUNT_PROFILE, bugs: { [bug]: true } });
    if (result.violations.length > 0) return { seed, nodes, result };
  }
  return undefined;
}

async function expectFound(bug: keyof PlantedBugs, kinds: RegExp): Promise<void> {
  const found = await search(bug);
  assert.ok(found !== undefined, `${bug}: no violation within ${SEEDS_SEARCHED_MAX} seeds`);
  const first = found.result.violations[0]!.replace(/^step \d+: /, "");
  assert.match(first, kinds, `${bug}: seed ${found.seed} failed for another reason`);
  const replay = `npm run sim -- --seeds 1 --from ${found.seed} --nodes ${found.nodes} --profile hunt --bug ${bug}`;
  const clean = await runSimulation({ seed: found.seed, nodes: found.nodes, steps: STEPS, profile: HUNT_PROFILE });
  assert.deepEqual(clean.violations, [], `without ${bug}, seed ${found.seed} still fails (${replay})`);
}

test("voteBeforePersist: two leaders in one term after a voter forgets its vote", async () => {
  await expectFound("voteBeforePersist", /^(election safety|log matching|leader completeness|state machine safety)/);
});

test("skipVoteLogCheck: a leader without a committed entry", async () => {
  await expectFound("skipVoteLogCheck", /^(leader completeness|state machine safety|log matching)/);
});

test("takeCommittedUnpersisted: an entry applied before this node persisted it", async () => {
  await expectFound("takeCommittedUnpersisted", /handed out, the disk has/);
});

test("commitPreviousTermByCount: Figure 8, a committed entry overwritten", async () => {
  await expectFound("commitPreviousTermByCount", /^(leader completeness|state machine safety)/);
});
