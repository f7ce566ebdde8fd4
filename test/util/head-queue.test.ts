// HeadQueue: first in, first out across the resets and compactions of its array, and nothing it
// handed out kept alive (the proposal queue's and the request window's queue).
import assert from "node:assert/strict";
import { test } from "node:test";
import { HeadQueue } from "../../src/util/head-queue.js";

test("items leave in the order they came, across resets and compactions", () => {
  const queue = new HeadQueue<number>();
  assert.equal(queue.shift(), undefined);
  assert.equal(queue.peek(), undefined);
  let pushed = 0;
  let shifted = 0;
  // Bursts that leave some behind, so the head passes the compaction point with items queued, and
  // bursts that empty it.
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 300; i++) queue.push(pushed++);
    const take = round % 3 === 2 ? queue.length : 250;
    for (let i = 0; i < take; i++) {
      assert.equal(queue.peek(), shifted);
      assert.equal(queue.shift(), shifted++);
    }
    assert.equal(queue.length, pushed - shifted);
  }
  const rest = queue.takeAll();
  assert.deepEqual(rest, Array.from({ length: pushed - shifted }, (_, i) => shifted + i));
  assert.equal(queue.length, 0);
  queue.push(7);
  assert.equal(queue.shift(), 7);
});
