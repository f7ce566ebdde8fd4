// DeadlineList: entries of one duration expire oldest first, a removed entry never expires, and
// an empty list holds no timer (an idle client must not keep the process alive).
import assert from "node:assert/strict";
import { test } from "node:test";
import { type DeadlineEntry, DeadlineList, Deadlines } from "../../src/client/scope.js";

function entry(name: string, expired: string[]): DeadlineEntry {
  return { deadlineMs: 0, deadlinePrevious: undefined, deadlineNext: undefined, deadlineList: undefined, expire: () => expired.push(name) };
}

test("entries expire oldest first; removed ones never; the list ends empty", async () => {
  const expired: string[] = [];
  const list = new DeadlineList(5);
  const [a, b, c] = [entry("a", expired), entry("b", expired), entry("c", expired)];
  list.add(a);
  list.add(b);
  list.add(c);
  list.remove(b);
  assert.equal(list.size, 2);
  while (expired.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(expired, ["a", "c"]);
  assert.equal(list.size, 0);
  assert.equal(a.deadlineList, undefined);
});

test("an emptied list drops its timer; durations setTimeout cannot take mean 1 ms", () => {
  const deadlines = new Deadlines();
  const list = deadlines.list(60_000);
  const only = entry("only", []);
  list.add(only);
  list.remove(only);
  // Nothing pending: the test process would otherwise stay alive for a minute after this test.
  assert.equal(list.size, 0);
  assert.equal(deadlines.list(Number.NaN).durationMs, 1);
  assert.equal(deadlines.list(2 ** 40).durationMs, 1);
  assert.equal(deadlines.list(60_000), list);
});
