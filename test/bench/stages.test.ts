// bench/lib/stages.ts lines up the nodes' entry traces per entry: these traces are made up so that
// every stage has a known length, a follower writes two entries at once, and one entry never
// reaches a follower.
import assert from "node:assert/strict";
import { test } from "node:test";
import { coveringTimes, entryStages, inFlight, stagesTable, summarize } from "../../bench/lib/stages.js";
import type { TraceEvent, TraceRecord } from "../../src/node/trace.js";

const at = (atMs: number, event: TraceEvent, last: number, count = 1): TraceRecord => ({ atMs, event, last, count });

// Entries 11..13 proposed at 100, 110, 120 (2 commands each). Follower A receives each 1 ms later
// and writes 11 alone (+2 ms) and 12-13 together (at 124); follower B is slower (3 ms to arrive,
// 4 to write) and never gets 13. The leader writes each 1.5 ms after proposing and applies each
// 0.5 ms after the first follower's write, for 0.25 ms.
const leader = [
  at(100, "proposed", 11, 2),
  at(101.5, "written", 11),
  at(110, "proposed", 12, 2),
  at(111.5, "written", 12),
  at(120, "proposed", 13, 2),
  at(121.5, "written", 13),
  at(103.5, "apply-start", 11),
  at(103.75, "apply-end", 11),
  at(124.5, "apply-start", 13, 2),
  at(124.75, "apply-end", 13, 2),
  at(50, "proposed", 5, 1), // before the window: not counted
];
const followerA = [at(101, "append-received", 11), at(103, "written", 11), at(111, "append-received", 12), at(121, "append-received", 13), at(124, "written", 13, 2)];
const followerB = [at(103, "append-received", 11), at(107, "written", 11), at(113, "append-received", 12), at(117, "written", 12)];

test("entryStages follows the proposing node and times each entry's stages on every node", () => {
  const stages = entryStages(
    new Map([
      ["a", followerA],
      ["lead", leader],
      ["b", followerB],
    ]),
    90,
    130,
  );
  assert.equal(stages.leader, "lead");
  assert.equal(stages.entries, 3);
  assert.equal(stages.commandsPerEntry, 2);
  const [a, b] = stages.followers;
  assert.equal(a!.node, "a");
  assert.deepEqual(a!.proposedToReceived, { medianMs: 1, p90Ms: 1, samples: 3 });
  // 11: 2 ms; 12 (written with 13 at 124): 13 ms; 13: 3 ms.
  assert.deepEqual(a!.receivedToWritten, { medianMs: 3, p90Ms: 13, samples: 3 });
  assert.equal(b!.node, "b");
  assert.deepEqual(b!.proposedToReceived, { medianMs: 3, p90Ms: 3, samples: 2 }, "13 never reached b");
  assert.deepEqual(b!.receivedToWritten, { medianMs: 4, p90Ms: 4, samples: 2 });
  assert.deepEqual(stages.leaderWrite, { medianMs: 1.5, p90Ms: 1.5, samples: 3 });
  // First follower written: 11 at 103 (a), 12 at 117 (b), 13 at 124 (a); applies start 103.5, 124.5, 124.5.
  assert.deepEqual(stages.firstWrittenToLeaderApply, { medianMs: 0.5, p90Ms: 7.5, samples: 3 });
  assert.deepEqual(stages.leaderApply, { medianMs: 0.25, p90Ms: 0.25, samples: 3 });
  assert.deepEqual(stages.proposedToAnswered, { medianMs: 4.75, p90Ms: 14.75, samples: 3 });
  // In flight from 100 to 124.75: 11 alone until 103.75, none until 110, 12 alone until 120, then 12 and 13.
  assert.deepEqual(stages.inFlight, { windowMs: 24.75, meanEntries: 0.939, noneMs: 6.25 });
  const table = stagesTable(stages);
  assert.match(table, /follower a +follower b +leader lead/);
  assert.match(table, /proposal -> answered +4\.75 \/ 14\.75/);
});

test("entryStages needs a node that proposed in the window", () => {
  assert.throws(() => entryStages(new Map([["lead", leader]]), 200, 300), /no node proposed an entry in the window/);
});

test("coveringTimes takes the earliest record whose range holds the index", () => {
  const records = [at(5, "written", 10, 4), at(3, "written", 12, 8), at(9, "written", 20, 1), at(1, "apply-end", 8, 1)];
  assert.deepEqual(coveringTimes(records, "written", [4, 5, 7, 9, 13, 20, 21]), [undefined, 3, 3, 3, undefined, 9, undefined]);
});

test("summarize gives the median and p90, and NaN for no samples", () => {
  assert.deepEqual(summarize([5, 1, 4, 2, 3, 6, 7, 8, 9, 10]), { medianMs: 6, p90Ms: 10, samples: 10 });
  assert.deepEqual(summarize([]), { medianMs: Number.NaN, p90Ms: Number.NaN, samples: 0 });
});

test("inFlight counts overlapping entries and the gaps between them, leaving out unanswered ones", () => {
  // [0, 4], [1, 3] and [10, 12]: 1 + 2 * 2 + 1 + 0 * 6 + 2 = 8 entry-ms over 12 ms.
  assert.deepEqual(inFlight([0, 1, 2, 10], [4, 3, undefined, 12]), { windowMs: 12, meanEntries: 0.667, noneMs: 6 });
  assert.deepEqual(inFlight([5], [undefined]), { windowMs: 0, meanEntries: 0, noneMs: 0 });
});
