import assert from "node:assert/strict";
import { test } from "node:test";
import { Inflights, Progress } from "../../src/raft/progress.js";

test("inflights: bounded by count", () => {
  const inflights = new Inflights(3, 0);
  inflights.add(5, 10);
  inflights.add(7, 10);
  assert.equal(inflights.full(), false);
  inflights.add(9, 10);
  assert.equal(inflights.full(), true);
  assert.throws(() => inflights.add(10, 1));
  inflights.freeLE(7);
  assert.deepEqual([inflights.count(), inflights.sizeBytes()], [1, 10]);
  inflights.freeLE(4); // nothing at or below 4
  assert.equal(inflights.count(), 1);
  inflights.freeFirst();
  assert.equal(inflights.count(), 0);
});

test("inflights: bounded by bytes", () => {
  const inflights = new Inflights(100, 25);
  inflights.add(1, 10);
  inflights.add(2, 10);
  assert.equal(inflights.full(), false);
  inflights.add(3, 10); // a message may overshoot; the window is full after it
  assert.equal(inflights.full(), true);
  inflights.freeLE(1);
  assert.equal(inflights.full(), false);
  assert.throws(() => inflights.add(2, 1), /increase/);
});

test("probe: one append at a time until an answer", () => {
  const progress = new Progress(5, 4, 0, false);
  assert.equal(progress.isPaused(), false);
  progress.sentEntries(2, 6, 20);
  assert.equal(progress.isPaused(), true);
  assert.equal(progress.next, 5); // probing does not move next optimistically
  // A rejection of the probe at index 4 with a hint at 2 moves next back to 3.
  assert.equal(progress.maybeDecreaseTo(4, 2), true);
  assert.deepEqual([progress.next, progress.isPaused()], [3, false]);
  // A stale rejection (not for next-1) is ignored.
  assert.equal(progress.maybeDecreaseTo(7, 0), false);
  assert.equal(progress.maybeUpdate(2), true);
  progress.becomeReplicate();
  assert.deepEqual([progress.state, progress.next], ["replicate", 3]);
});

test("replicate: pipelined appends move next; a rejection falls back to match+1", () => {
  const progress = new Progress(1, 2, 0, false);
  progress.becomeReplicate();
  progress.sentEntries(3, 3, 30);
  progress.sentEntries(2, 5, 20);
  assert.deepEqual([progress.next, progress.isPaused()], [6, true]);
  assert.equal(progress.maybeUpdate(3), true);
  progress.inflights.freeLE(3);
  assert.equal(progress.isPaused(), false);
  assert.equal(progress.maybeDecreaseTo(2, 0), false); // at or below match: stale
  assert.equal(progress.maybeDecreaseTo(5, 4), true);
  assert.equal(progress.next, 4);
});

test("snapshot: paused until reported; probing resumes after the snapshot", () => {
  const progress = new Progress(1, 2, 0, false);
  progress.becomeSnapshot(10);
  assert.equal(progress.isPaused(), true);
  progress.becomeProbe();
  assert.deepEqual([progress.state, progress.next], ["probe", 11]);
  // A failed snapshot (pendingSnapshot cleared) probes from match + 1.
  progress.becomeSnapshot(10);
  progress.pendingSnapshot = 0;
  progress.becomeProbe();
  assert.equal(progress.next, 1);
});
