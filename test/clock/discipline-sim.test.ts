// A small deterministic simulation of clock discipline: nodes with skewed and drifting clocks
// exchange NTP-like samples over a network with random, asymmetric delays (and occasional delay
// spikes); each node runs the real NodeClock. Time is simulated, so a run is a pure function of
// its seed and takes milliseconds.
//
// Claims checked:
// - every node's disciplined clock converges on the cluster's median raw clock within
//   ± (max asymmetry / 2 + 5 ms) and stays there, despite drift;
// - a node past max offset is fenced (unhealthy), and healthy again once corrected (by a step, or
//   by a slow slew when stepping is off);
// - HLC timestamps stay strictly increasing on every node through steps and jumps.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NodeClock, type NodeClockOptions } from "../../src/clock/node-clock.js";
import { median } from "../../src/clock/offset-estimator.js";
import { SkewedClock } from "../../src/clock/skewed-clock.js";

const TICK_MS = 100; // each pair exchanges one sample each way per tick
const DISCIPLINE_EVERY_MS = 1000;
const DELAY_MS_MIN = 0.2;
const DELAY_MS_MAX = 5;
const SPIKE_PROBABILITY = 0.1; // a delay spike of up to SPIKE_MS_MAX extra, one way only
const SPIKE_MS_MAX = 50;
const ASYMMETRY_MS_MAX = DELAY_MS_MAX - DELAY_MS_MIN; // of spike-free exchanges
const CONVERGENCE_BOUND_MS = ASYMMETRY_MS_MAX / 2 + 5;

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimNodeConfig {
  offsetMs: number;
  driftPpm: number;
  options?: NodeClockOptions;
}

interface SimNode {
  id: number;
  raw: SkewedClock;
  clock: NodeClock;
  lastTimestamp: bigint;
  healthLog: Array<{ atMs: number; healthy: boolean }>;
}

class ClockSim {
  trueMs = 1_700_000_000_000;
  readonly startMs = this.trueMs;
  readonly nodes: SimNode[];
  private readonly random: () => number;

  constructor(seed: number, configs: SimNodeConfig[]) {
    this.random = mulberry32(seed);
    this.nodes = configs.map((config, index) => {
      const raw = new SkewedClock(() => this.trueMs, { offsetMs: config.offsetMs, driftPpm: config.driftPpm });
      const clock = new NodeClock(() => raw.nowMs(), config.options);
      return { id: index + 1, raw, clock, lastTimestamp: -1n, healthLog: [] };
    });
  }

  get elapsedMs(): number {
    return this.trueMs - this.startMs;
  }

  // Runs for durationMs; `each` runs after every discipline round.
  run(durationMs: number, each?: () => void): void {
    const endMs = this.trueMs + durationMs;
    while (this.trueMs < endMs) {
      this.trueMs += TICK_MS;
      for (const a of this.nodes) {
        for (const b of this.nodes) if (a !== b) a.clock.addSample(b.id, this.exchange(a, b));
        this.stamp(a);
      }
      if (this.elapsedMs % DISCIPLINE_EVERY_MS === 0) {
        for (const node of this.nodes) this.discipline(node);
        each?.();
      }
    }
  }

  // The error of a node's disciplined clock from the median of all raw clocks, now.
  errorFromMedianMs(node: SimNode): number {
    return node.clock.disciplined.nowMs() - median(this.nodes.map((other) => other.raw.nowMs()));
  }

  // The error of a node's estimate of (median raw clock - its raw clock), now.
  estimateErrorMs(node: SimNode): number {
    const rawMs = node.raw.nowMs();
    const truthMs = median(this.nodes.map((other) => other.raw.nowMs())) - rawMs;
    return (node.clock.estimator.clusterOffsetMs(rawMs) ?? Number.NaN) - truthMs;
  }

  private delayMs(): number {
    const base = DELAY_MS_MIN + this.random() * (DELAY_MS_MAX - DELAY_MS_MIN);
    return this.random() < SPIKE_PROBABILITY ? base + this.random() * SPIKE_MS_MAX : base;
  }

  // One exchange ending now: a sends at t1, b receives at t2, holds, replies at t3, a receives at t4.
  private exchange(a: SimNode, b: SimNode) {
    const outMs = this.delayMs();
    const holdMs = this.random() * 20;
    const backMs = this.delayMs();
    const sentMs = this.trueMs - (outMs + holdMs + backMs);
    return {
      t1Ms: a.raw.readAt(sentMs),
      t2Ms: b.raw.readAt(sentMs + outMs),
      t3Ms: b.raw.readAt(sentMs + outMs + holdMs),
      t4Ms: a.raw.readAt(this.trueMs),
    };
  }

  private stamp(node: SimNode): void {
    const timestamp = node.clock.hlc.now();
    assert.ok(timestamp > node.lastTimestamp, `node ${node.id}: HLC went from ${node.lastTimestamp} to ${timestamp}`);
    node.lastTimestamp = timestamp;
  }

  private discipline(node: SimNode): void {
    const report = node.clock.discipline();
    const last = node.healthLog.at(-1);
    if (last === undefined || last.healthy !== report.healthy) node.healthLog.push({ atMs: this.elapsedMs, healthy: report.healthy });
  }
}

for (const seed of [1, 2, 3]) {
  test(`seed ${seed}: five skewed, drifting clocks converge on the median within ±${CONVERGENCE_BOUND_MS} ms`, () => {
    const sim = new ClockSim(seed, [
      { offsetMs: -40, driftPpm: 50 },
      { offsetMs: -10, driftPpm: -30 },
      { offsetMs: 0, driftPpm: 0 },
      { offsetMs: 20, driftPpm: 80 },
      { offsetMs: 90, driftPpm: -100 },
    ]);
    // 90 ms at 500 ppm slews in 180 s; give it 250 s, then watch 150 s more.
    sim.run(250_000);
    let worstMs = 0;
    let worstEstimateMs = 0;
    sim.run(150_000, () => {
      for (const node of sim.nodes) {
        worstMs = Math.max(worstMs, Math.abs(sim.errorFromMedianMs(node)));
        worstEstimateMs = Math.max(worstEstimateMs, Math.abs(sim.estimateErrorMs(node)));
      }
    });
    assert.ok(worstEstimateMs <= CONVERGENCE_BOUND_MS, `worst estimate error ${worstEstimateMs.toFixed(2)} ms`);
    assert.ok(worstMs <= CONVERGENCE_BOUND_MS, `worst error ${worstMs.toFixed(2)} ms`);
    if (process.env.FERRY_SIM_VERBOSE) console.log(`seed ${seed}: worst clock error ${worstMs.toFixed(3)} ms, worst estimate error ${worstEstimateMs.toFixed(3)} ms`);
    for (const node of sim.nodes) {
      assert.deepEqual(node.healthLog, [{ atMs: 1000, healthy: true }], `node ${node.id} stays healthy: offsets below max`);
      assert.ok(node.clock.status().peers.every((peer) => peer.delayMs <= DELAY_MS_MAX * 2));
    }
  });
}

test("a node past max offset is fenced, stepped, and healthy again after the rejoin period; HLC stays monotonic", () => {
  const sim = new ClockSim(7, [
    { offsetMs: 0, driftPpm: 0 },
    { offsetMs: 5, driftPpm: 20 },
    { offsetMs: 400, driftPpm: 0 },
  ]);
  const wild = sim.nodes[2]!;
  sim.run(1000);
  assert.equal(wild.clock.isHealthy, false);
  assert.match(wild.clock.status().reason, /exceeds the maximum of 250 ms/);
  const aheadTimestamp = wild.lastTimestamp;
  assert.ok(Math.abs(sim.errorFromMedianMs(wild)) <= CONVERGENCE_BOUND_MS, "stepped at once");
  sim.run(10_000);
  assert.deepEqual(wild.healthLog, [
    { atMs: 1000, healthy: false },
    { atMs: 7000, healthy: true }, // in bounds from the round after the step, held 5 s
  ]);
  assert.ok(wild.lastTimestamp > aheadTimestamp, "timestamps kept increasing after the backward step");
  for (const node of sim.nodes.slice(0, 2)) assert.deepEqual(node.healthLog, [{ atMs: 1000, healthy: true }]);
});

test("with stepping off, a far clock slews back at the bounded rate and rejoins once well within bounds", () => {
  const slewOnly: NodeClockOptions = { stepThresholdMs: Number.POSITIVE_INFINITY };
  const sim = new ClockSim(11, [
    { offsetMs: 0, driftPpm: 0, options: slewOnly },
    { offsetMs: -3, driftPpm: 0, options: slewOnly },
    { offsetMs: 300, driftPpm: 0, options: slewOnly },
  ]);
  const far = sim.nodes[2]!;
  let previousMs = far.clock.disciplined.nowMs();
  let previousTrueMs = sim.trueMs;
  sim.run(650_000, () => { // 300 ms at 500 ppm takes 600 s
    const nowMs = far.clock.disciplined.nowMs();
    const rate = (nowMs - previousMs) / (sim.trueMs - previousTrueMs);
    // 1e-6: float resolution of ms readings near 1.7e12 over 1 s.
    assert.ok(Math.abs(rate - 1) <= 500e-6 + 1e-6, `slewed clock rate ${rate}`);
    previousMs = nowMs;
    previousTrueMs = sim.trueMs;
  });
  // Rejoin needs |offset| <= 125 ms: (300 - 125) ms at 500 ppm is 350 s, plus 5 s held.
  const [fenced, rejoined] = far.healthLog;
  assert.equal(fenced?.healthy, false);
  assert.equal(rejoined?.healthy, true);
  assert.ok(rejoined!.atMs >= 350_000 && rejoined!.atMs <= 360_000, `rejoined at ${rejoined!.atMs} ms`);
  assert.equal(far.healthLog.length, 2);
  const errorMs = sim.errorFromMedianMs(far);
  assert.ok(Math.abs(errorMs) <= CONVERGENCE_BOUND_MS, `error ${errorMs} ms`);
});

test("a clock that jumps mid-run is fenced, corrected and rejoins; its HLC never goes back", () => {
  const sim = new ClockSim(5, [
    { offsetMs: 0, driftPpm: 10 },
    { offsetMs: 2, driftPpm: -10 },
    { offsetMs: -1, driftPpm: 0 },
  ]);
  sim.run(20_000);
  const jumper = sim.nodes[1]!;
  assert.ok(sim.nodes.every((node) => node.clock.isHealthy));
  jumper.raw.jump(2000);
  sim.run(3000);
  assert.equal(jumper.healthLog.at(-1)?.healthy, false, "fenced after the jump");
  sim.run(20_000);
  assert.equal(jumper.healthLog.at(-1)?.healthy, true, "healthy again");
  assert.ok(Math.abs(sim.errorFromMedianMs(jumper)) <= CONVERGENCE_BOUND_MS);
  for (const node of [sim.nodes[0]!, sim.nodes[2]!]) assert.deepEqual(node.healthLog, [{ atMs: 1000, healthy: true }], "others unaffected");
});
