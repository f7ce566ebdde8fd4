// Properties of the hybrid logical clock and its encoding.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  decodeTimestamp,
  encodeTimestamp,
  HybridClock,
  LOGICAL_MAX,
  PHYSICAL_MS_MAX,
  parseTimestamp,
  physicalMsOf,
  timestampFromKey,
  timestampToKey,
  timestampToString,
} from "../../src/clock/hlc.js";

const physical = fc.integer({ min: 0, max: PHYSICAL_MS_MAX });
const logical = fc.integer({ min: 0, max: LOGICAL_MAX });
const pair = fc.tuple(physical, logical);
// A physical clock that wanders: steps forward and backward, stalls, jumps.
const clockSteps = fc.array(fc.integer({ min: -5000, max: 5000 }), { minLength: 1, maxLength: 200 });

function wanderingClock(startMs: number, steps: number[]): { clock: () => number; advance: () => void } {
  let nowMs = startMs;
  let step = 0;
  return {
    clock: () => nowMs,
    advance: () => {
      nowMs = Math.max(0, nowMs + steps[step++ % steps.length]!);
    },
  };
}

test("encode/decode round-trips and preserves (physical, logical) order, in every form", () => {
  fc.assert(
    fc.property(pair, pair, ([pa, la], [pb, lb]) => {
      const a = encodeTimestamp(pa, la);
      const b = encodeTimestamp(pb, lb);
      assert.deepEqual(decodeTimestamp(a), { physicalMs: pa, logical: la });
      const tupleOrder = pa === pb ? Math.sign(la - lb) : Math.sign(pa - pb);
      const bigintOrder = a === b ? 0 : a < b ? -1 : 1;
      assert.equal(bigintOrder, tupleOrder);
      const keyA = timestampToKey(a);
      const keyB = timestampToKey(b);
      assert.equal(keyA === keyB ? 0 : keyA < keyB ? -1 : 1, tupleOrder, "key strings sort like timestamps");
      assert.equal(timestampFromKey(keyA), a);
      assert.equal(parseTimestamp(timestampToString(a)), a);
    }),
  );
});

test("parseTimestamp refuses what is not a timestamp", () => {
  for (const text of ["", "-1", "1.5", "abc", " 12", "18446744073709551616", "1".repeat(21)]) {
    assert.throws(() => parseTimestamp(text), RangeError, text);
  }
  assert.equal(parseTimestamp("18446744073709551615"), (1n << 64n) - 1n);
});

test("now() is strictly increasing whatever the physical clock does", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 42 }), clockSteps, (startMs, steps) => {
      const { clock, advance } = wanderingClock(startMs, steps);
      const hlc = new HybridClock(clock);
      let previous = -1n;
      for (let index = 0; index < steps.length * 2; index++) {
        const timestamp = hlc.now();
        assert.ok(timestamp > previous);
        assert.ok(physicalMsOf(timestamp) >= clock() || timestamp === previous + 1n, "follows the clock unless it must not go back");
        previous = timestamp;
        advance();
      }
    }),
  );
});

test("update(remote) dominates the remote timestamp, the clock, and everything issued before", () => {
  fc.assert(
    fc.property(clockSteps, fc.array(pair, { minLength: 1, maxLength: 50 }), (steps, remotes) => {
      const { clock, advance } = wanderingClock(1_700_000_000_000, steps);
      const hlc = new HybridClock(clock);
      let previous = hlc.now();
      for (const [pm, lg] of remotes) {
        const remote = encodeTimestamp(Math.min(pm, PHYSICAL_MS_MAX - 1), lg);
        const timestamp = hlc.update(remote);
        assert.ok(timestamp > remote, "above the remote");
        assert.ok(timestamp > previous, "above everything issued");
        assert.ok(timestamp >= encodeTimestamp(clock(), 0), "not below the clock");
        previous = timestamp;
        advance();
      }
    }),
  );
});

test("observe() raises the floor: a new leader stamps above the largest timestamp in its log", () => {
  fc.assert(
    fc.property(physical, logical, fc.integer({ min: 0, max: 2 ** 44 }), (pm, lg, clockMs) => {
      const hlc = new HybridClock(() => clockMs);
      const maxInLog = encodeTimestamp(Math.min(pm, PHYSICAL_MS_MAX - 1), lg);
      hlc.observe(maxInLog);
      assert.ok(hlc.now() > maxInLog);
    }),
  );
});

test("a full logical counter carries into the physical part", () => {
  const hlc = new HybridClock(() => 1000);
  let previous = hlc.now();
  assert.deepEqual(decodeTimestamp(previous), { physicalMs: 1000, logical: 0 });
  for (let index = 0; index < LOGICAL_MAX + 10; index++) {
    const timestamp = hlc.now();
    assert.ok(timestamp > previous);
    previous = timestamp;
  }
  assert.deepEqual(decodeTimestamp(previous), { physicalMs: 1001, logical: 9 });
});

test("a restart from the persisted high-water mark issues timestamps above the previous run's", () => {
  fc.assert(
    fc.property(clockSteps, fc.integer({ min: 1, max: 60_000 }), fc.integer({ min: -120_000, max: 0 }), (steps, reserveMs, restartSkewMs) => {
      const { clock, advance } = wanderingClock(1_700_000_000_000, steps);
      const before = new HybridClock(clock);
      let persisted = before.reserveHighWaterMark(reserveMs);
      let issuedMax = 0n;
      for (let index = 0; index < steps.length; index++) {
        // The driver renews the reservation whenever it is half used.
        if (before.needsReservation()) persisted = before.reserveHighWaterMark(reserveMs);
        issuedMax = before.now();
        assert.ok(issuedMax < persisted, "issued timestamps stay below the persisted mark");
        advance();
      }
      // The restarted process may even start with a clock that is behind.
      const after = new HybridClock(() => Math.max(0, clock() + restartSkewMs), persisted);
      assert.ok(after.now() > issuedMax);
    }),
  );
});
