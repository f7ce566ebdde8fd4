// The seeded generator: same seed, same stream; ranges respected; forks independent.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Random } from "./random.js";

test("the same seed gives the same stream, different seeds differ", () => {
  const draws = (seed: number) => Array.from({ length: 8 }, () => new Random(seed).nextUint32());
  const stream = (seed: number) => {
    const random = new Random(seed);
    return Array.from({ length: 8 }, () => random.nextUint32());
  };
  assert.deepEqual(stream(42), stream(42));
  assert.notDeepEqual(stream(42), stream(43));
  assert.notDeepEqual(stream(2 ** 40), stream(2 ** 40 + 2 ** 33)); // high bits count too
  assert.equal(new Set(draws(7)).size, 1);
});

test("draws stay in their ranges and cover them", () => {
  const random = new Random(1);
  const seen = new Set<number>();
  for (let i = 0; i < 10_000; i++) {
    const value = random.range(3, 7);
    assert.ok(value >= 3 && value <= 7);
    seen.add(value);
    const float = random.float();
    assert.ok(float >= 0 && float < 1);
  }
  assert.deepEqual([...seen].sort(), [3, 4, 5, 6, 7]);
  assert.equal(random.chance(0), false);
});

test("chance is roughly fair and shuffle is a permutation", () => {
  const random = new Random(9);
  let hits = 0;
  for (let i = 0; i < 10_000; i++) if (random.chance(0.25)) hits++;
  assert.ok(hits > 2_200 && hits < 2_800, `hits ${hits}`);
  const items = [1, 2, 3, 4, 5, 6];
  assert.deepEqual([...random.shuffle([...items])].sort(), items);
});

test("forks are deterministic and independent of each other", () => {
  const a = new Random(5);
  const b = new Random(5);
  const forkA = a.fork();
  const forkB = b.fork();
  assert.equal(forkA.nextUint32(), forkB.nextUint32());
  assert.notEqual(a.fork().nextUint32(), a.fork().nextUint32());
});
