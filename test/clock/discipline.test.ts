// Offset estimation, the disciplined clock and the skew guard, one piece at a time.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { DisciplinedClock } from "../../src/clock/disciplined-clock.js";
import { centralOffsetMs, measureSample, median, OffsetEstimator } from "../../src/clock/offset-estimator.js";
import { SkewGuard } from "../../src/clock/skew-guard.js";
import { SkewedClock } from "../../src/clock/skewed-clock.js";

// An exchange between us (true time + ourErrorMs) and a peer (true time + peerErrorMs).
function exchange(startMs: number, ourErrorMs: number, peerErrorMs: number, outMs: number, holdMs: number, backMs: number) {
  return {
    t1Ms: startMs + ourErrorMs,
    t2Ms: startMs + outMs + peerErrorMs,
    t3Ms: startMs + outMs + holdMs + peerErrorMs,
    t4Ms: startMs + outMs + holdMs + backMs + ourErrorMs,
  };
}

test("one sample: offset exact when delays are symmetric, error at most half the asymmetry", () => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      fc.double({ min: 0, max: 50, noNaN: true }),
      fc.double({ min: 0, max: 50, noNaN: true }),
      fc.double({ min: 0, max: 100, noNaN: true }),
      (peerErrorMs, outMs, backMs, holdMs) => {
        const measured = measureSample(exchange(1e12, 0, peerErrorMs, outMs, holdMs, backMs));
        assert.ok(Math.abs(measured.offsetMs - peerErrorMs) <= Math.abs(outMs - backMs) / 2 + 1e-3);
        assert.ok(Math.abs(measured.delayMs - (outMs + backMs)) <= 1e-3);
      },
    ),
  );
});

test("the estimator trusts each peer's minimum-delay sample and takes the median with itself", () => {
  const estimator = new OffsetEstimator();
  // Peer 2 is 100 ms ahead; its noisy samples have long, asymmetric delays.
  estimator.addSample(2, exchange(1000, 0, 100, 40, 1, 2)); // offset error +19
  estimator.addSample(2, exchange(2000, 0, 100, 1, 1, 1)); // exact, delay 2
  estimator.addSample(2, exchange(3000, 0, 100, 2, 1, 30)); // offset error -14
  assert.equal(estimator.peerOffset(2, 3100)?.offsetMs, 100);
  assert.equal(estimator.peerOffset(2, 3100)?.delayMs, 2);
  // Peer 3 is 10 ms behind: the median of {0, +100, -10} is 0 — we are the middle clock.
  estimator.addSample(3, exchange(3000, 0, -10, 1, 0, 1));
  assert.equal(estimator.clusterOffsetMs(3100), 0);
  // Peer 4 also ahead by 50: {-10, 0, 50, 100} has an even count; we lie between the two middle
  // clocks (0 and 50), so we are a middle clock: no correction (an average would say 25).
  estimator.addSample(4, exchange(3000, 0, 50, 1, 0, 1));
  assert.equal(estimator.clusterOffsetMs(3100), 0);
  // Peer 5 ahead by 70: the median of {-10, 0, 50, 70, 100} is 50.
  estimator.addSample(5, exchange(3000, 0, 70, 1, 0, 1));
  assert.equal(estimator.clusterOffsetMs(3100), 50);
  assert.equal(median([5]), 5);
});

test("with an even count the two middle clocks are never averaged: one jumped peer cannot drag us halfway", () => {
  // A follower of a young 3-node cluster that has heard only from the leader, whose clock jumped
  // 5 s ahead: the median of {0, +5000} would be +2500, a step that fenced the follower too.
  assert.equal(centralOffsetMs([5000]), 0);
  assert.equal(centralOffsetMs([-5000]), 0);
  // Once the other follower is heard from, the odd median names the two agreeing clocks.
  assert.equal(centralOffsetMs([5000, 3]), 3);
  // Even counts with us outside the two middle clocks: the nearer of them.
  assert.equal(centralOffsetMs([100, 200, 300]), 100);
  assert.equal(centralOffsetMs([-100, -200, -300]), -100);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: -10_000, max: 10_000 }), { minLength: 1, maxLength: 6 }), (offsets) => {
      const central = centralOffsetMs(offsets);
      const all = [0, ...offsets].sort((a, b) => a - b);
      // Always one of the clocks (never a midpoint), between the two middle ones.
      assert.ok(all.includes(central));
      assert.ok(central >= all[(all.length - 1) >> 1]! && central <= all[all.length >> 1]!);
      if (all.length % 2 === 1) assert.equal(central, median(all));
    }),
  );
});

test("old samples expire, and samples with a negative or huge delay are rejected", () => {
  const estimator = new OffsetEstimator({ sampleMaxAgeMs: 10_000, sampleDelayMsMax: 500 });
  assert.equal(estimator.clusterOffsetMs(0), undefined, "alone: no estimate");
  estimator.addSample(2, exchange(1000, 0, 30, 1, 0, 1));
  assert.equal(estimator.clusterOffsetMs(5000), 0, "one peer: {0, +30}, we are a middle clock");
  assert.equal(estimator.peerOffset(2, 5000)?.offsetMs, 30);
  assert.equal(estimator.clusterOffsetMs(20_000), undefined, "stale");
  assert.equal(estimator.addSample(2, { t1Ms: 100, t2Ms: 100, t3Ms: 200, t4Ms: 150 }), undefined, "negative delay");
  assert.equal(estimator.addSample(2, exchange(1000, 0, 30, 400, 0, 400)), undefined, "delay over the limit");
  assert.equal(estimator.addSample(2, { t1Ms: Number.NaN, t2Ms: 1, t3Ms: 2, t4Ms: 3 }), undefined);
});

test("the window keeps the newest samples: a clock that jumped is re-estimated within one window", () => {
  const estimator = new OffsetEstimator({ windowSamples: 4 });
  estimator.addSample(2, exchange(0, 0, 0, 0.1, 0, 0.1)); // a very good old sample
  for (let index = 1; index <= 4; index++) estimator.addSample(2, exchange(index * 1000, 0, 700, 2, 0, 2));
  assert.equal(estimator.peerOffset(2, 5000)?.offsetMs, 700);
});

test("the disciplined clock slews small corrections at the bounded rate and steps large ones", () => {
  let rawMs = 1_000_000;
  const clock = new DisciplinedClock(() => rawMs, { stepThresholdMs: 100, slewRatePpm: 500 });
  assert.equal(clock.nowMs(), rawMs);
  assert.deepEqual(clock.adjust(50), { action: "slew", deltaMs: 50 });
  rawMs += 10_000; // 10 s at 500 ppm: 5 ms of correction
  assert.ok(Math.abs(clock.correctionMs() - 5) < 1e-9);
  rawMs += 1_000_000;
  assert.equal(clock.correctionMs(), 50, "reaches the target and stops there");
  assert.equal(clock.adjust(-200).action, "step");
  assert.equal(clock.correctionMs(), -200);
  assert.equal(clock.nowMs(), rawMs - 200);
  // A raw clock that goes backwards gives no elapsed time to slew on.
  clock.adjust(-190);
  rawMs -= 60_000;
  assert.equal(clock.correctionMs(), -200);
});

test("a slewing clock never moves faster or slower than the slew rate allows", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: -100, max: 100 })), { minLength: 1, maxLength: 100 }), (steps) => {
      let rawMs = 0;
      const clock = new DisciplinedClock(() => rawMs, { stepThresholdMs: Number.POSITIVE_INFINITY, slewRatePpm: 500 });
      let previous = clock.nowMs();
      for (const [elapsedMs, target] of steps) {
        clock.adjust(target);
        rawMs += elapsedMs;
        const now = clock.nowMs();
        const rate = (now - previous) / elapsedMs;
        assert.ok(rate >= 1 - 500e-6 - 1e-9 && rate <= 1 + 500e-6 + 1e-9, `rate ${rate}`);
        previous = now;
      }
    }),
  );
});

test("the skew guard fences past max offset and rejoins only after holding well within it", () => {
  const guard = new SkewGuard({ maxOffsetMs: 250, rejoinFraction: 0.5, rejoinAfterMs: 5000 });
  assert.equal(guard.update(undefined, 0).healthy, true, "no estimate: nothing to object to");
  assert.equal(guard.update(240, 0).healthy, true);
  const fenced = guard.update(-300, 1000);
  assert.equal(fenced.healthy, false);
  assert.match(fenced.reason, /-300\.0 ms .*exceeds the maximum of 250 ms/);
  assert.equal(guard.update(200, 2000).healthy, false, "within max but not within the rejoin bound");
  assert.equal(guard.update(100, 3000).healthy, false, "starts the rejoin period");
  assert.equal(guard.update(undefined, 7000).healthy, false, "no estimate changes nothing");
  assert.equal(guard.update(-90, 7999).healthy, false);
  assert.equal(guard.update(10, 8000).healthy, true, "held within 125 ms for 5 s");
  assert.equal(guard.update(130, 9000).healthy, true, "healthy again: only max offset fences");
});

test("the skew guard restarts the rejoin period when the offset leaves the rejoin bound", () => {
  const guard = new SkewGuard({ maxOffsetMs: 100, rejoinFraction: 0.5, rejoinAfterMs: 1000 });
  guard.update(500, 0);
  guard.update(10, 100);
  guard.update(80, 600); // beyond 50: the clock is not settled
  assert.equal(guard.update(10, 1200).healthy, false);
  assert.equal(guard.update(10, 2200).healthy, true);
});

test("a skewed clock applies offset, drift and jumps to its base clock", () => {
  let baseMs = 1_000_000;
  const clock = new SkewedClock(() => baseMs, { offsetMs: 40, driftPpm: 100 });
  assert.equal(clock.nowMs(), 1_000_040);
  baseMs += 1_000_000; // 1000 s at 100 ppm: +100 ms
  assert.equal(clock.errorMs(), 140);
  clock.jump(-1000);
  assert.equal(clock.errorMs(), -860);
  clock.setDrift(0);
  baseMs += 1_000_000;
  assert.equal(clock.errorMs(), -860, "accumulated drift is kept, no more is added");
  assert.equal(clock.readAt(baseMs), clock.nowMs());
});
