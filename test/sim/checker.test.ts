// The safety checker accepts a valid history and names each kind of violation.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Entry } from "../../src/raft/types.js";
import { type LogView, SafetyChecker } from "./checker.js";
import { encodeProposal, INITIAL_STATE_HASH, nextStateHash, StateMachine } from "./state-machine.js";

function entry(index: number, term: number, value?: number): Entry {
  return { index, term, type: "normal", data: value === undefined ? new Uint8Array(0) : encodeProposal(value, 3) };
}

function logOf(entries: Entry[]): LogView {
  return { firstIndex: () => 1, lastIndex: () => entries.length, term: (i) => entries[i - 1]!.term };
}

// Applies entries on a fresh state machine, reporting each to the checker as node `node`, in
// term `nodeTerm` (default: the last entry's term, as the leader that committed them would be).
function applyAll(checker: SafetyChecker, node: number, entries: Entry[], nodeTerm = entries.at(-1)?.term ?? 0): void {
  const machine = new StateMachine();
  for (const e of entries) {
    machine.apply(e);
    checker.applied(node, e, machine.hash, nodeTerm);
  }
}

test("a valid history passes", () => {
  const checker = new SafetyChecker();
  const log = [entry(1, 1), entry(2, 1, 10), entry(3, 2)];
  checker.leaderElected(1, 1);
  checker.proposed(10, 2, 1);
  checker.entriesPersisted(1, log, 0);
  checker.entriesPersisted(2, log.slice(1), 1);
  applyAll(checker, 1, log);
  applyAll(checker, 2, log);
  checker.leaderElected(2, 2);
  checker.leaderLogChecked(2, 3, logOf(log));
  assert.deepEqual(checker.violations, []);
  assert.equal(checker.committedProposals, 1);
});

test("election safety: two leaders in one term", () => {
  const checker = new SafetyChecker();
  checker.leaderElected(1, 4);
  checker.leaderElected(1, 4);
  checker.leaderElected(2, 4);
  assert.match(checker.violations.join(), /election safety: n1 and n2 both leader in term 4/);
});

test("log matching: same index and term, different entry or different predecessor", () => {
  const checker = new SafetyChecker();
  checker.entriesPersisted(1, [entry(5, 2, 1)], 2);
  checker.entriesPersisted(2, [entry(5, 2, 2)], 2);
  assert.match(checker.violations[0]!, /log matching: entry 5\/t2 differs/);
  const other = new SafetyChecker();
  other.entriesPersisted(1, [entry(5, 2)], 1);
  other.entriesPersisted(2, [entry(5, 2)], 2);
  assert.match(other.violations[0]!, /log matching: before 5\/t2 n1 has term 1, n2 has term 2/);
});

test("leader completeness: a later leader lacks a committed entry", () => {
  const checker = new SafetyChecker();
  applyAll(checker, 1, [entry(1, 1), entry(2, 1)]);
  checker.leaderLogChecked(3, 2, logOf([entry(1, 1)]));
  assert.match(checker.violations[0]!, /leader completeness: n3 leads term 2 without committed 2\/t1/);
  const other = new SafetyChecker();
  applyAll(other, 1, [entry(1, 1), entry(2, 1)]);
  other.leaderLogChecked(3, 3, logOf([entry(1, 1), entry(2, 2)]));
  assert.match(other.violations[0]!, /leader completeness: n3 leads term 3 with 2\/t2, committed was 2\/t1/);
});

// Seed 772863 (3 nodes): n3, a candidate of term 7 with 1..6/t1, was paused with n1's vote for it
// on the way; meanwhile n2 won term 8 and committed 7/t1..12/t1 through an entry of term 8. The
// vote then arrived and n3 led term 7 with 7/t7, which is legal: the entries were committed in
// term 8, and a leader of term 7 commits nothing once a majority is in term 8.
test("leader completeness counts the term an entry was committed in, not the entry's own", () => {
  const stale = new SafetyChecker();
  applyAll(stale, 2, [entry(1, 1), entry(2, 1), entry(3, 8)], 8); // 2/t1 committed in term 8
  stale.committed(1, 2, 1, 8);
  stale.leaderLogChecked(3, 7, logOf([entry(1, 1), entry(2, 7)]));
  assert.deepEqual(stale.violations, []);
  // The same leader in term 9 lacks an entry committed in term 8.
  stale.leaderLogChecked(3, 9, logOf([entry(1, 1), entry(2, 7)]));
  assert.match(stale.violations[0]!, /leader completeness: n3 leads term 9 with 2\/t7, committed was 2\/t1/);
  // A node that saw the commit in an earlier term lowers the entry's commit term: term 7 is then
  // too late for a leader without it.
  const early = new SafetyChecker();
  applyAll(early, 2, [entry(1, 1), entry(2, 1), entry(3, 8)], 8);
  early.committed(1, 2, 1, 1);
  early.leaderLogChecked(3, 7, logOf([entry(1, 1), entry(2, 7)]));
  assert.match(early.violations[0]!, /leader completeness: n3 leads term 7 with 2\/t7, committed was 2\/t1/);
});

test("state machine safety: different entries applied at one index", () => {
  const checker = new SafetyChecker();
  applyAll(checker, 1, [entry(1, 1), entry(2, 1)]);
  applyAll(checker, 2, [entry(1, 1), entry(2, 2)]);
  assert.match(checker.violations[0]!, /state machine safety: n2 applied 2\/t2, n1 applied 2\/t1/);
});

test("state machine safety: a restored snapshot with the wrong state", () => {
  const checker = new SafetyChecker();
  applyAll(checker, 1, [entry(1, 1), entry(2, 1)]);
  checker.snapshotRestored(2, 2, 1, nextStateHash(INITIAL_STATE_HASH, entry(1, 1)));
  assert.match(checker.violations[0]!, /snapshot state at 2 differs/);
});

test("proposals: never proposed, misplaced, applied twice", () => {
  const checker = new SafetyChecker();
  applyAll(checker, 1, [entry(1, 1, 77)]);
  assert.match(checker.violations[0]!, /v77 at 1, never proposed/);
  const misplaced = new SafetyChecker();
  misplaced.proposed(5, 2, 1);
  applyAll(misplaced, 1, [entry(1, 1, 5)]);
  assert.match(misplaced.violations[0]!, /applied v5 at 1\/t1, proposed at 2\/t1/);
  const duplicate = new SafetyChecker();
  duplicate.proposed(5, 1, 1);
  applyAll(duplicate, 1, [entry(1, 1, 5), entry(2, 1, 5)]);
  assert.match(duplicate.violations.join(), /v5 applied at 1 and at 2 \(duplicate\)/);
});

test("the state machine's snapshot round-trips", () => {
  const machine = new StateMachine();
  machine.apply(entry(1, 1, 3));
  machine.apply(entry(2, 1));
  const restored = StateMachine.fromSnapshot(machine.snapshotData());
  assert.equal(restored.appliedIndex, 2);
  assert.equal(restored.hash, machine.hash);
  assert.equal(StateMachine.fromSnapshot(new Uint8Array(0)).appliedIndex, 0);
});

test("linearizable reads: a read index below a commit seen before the read began", () => {
  const checker = new SafetyChecker();
  checker.committed(1, 1, 1, 1);
  checker.committed(1, 2, 1, 1);
  checker.readStarted(7);
  checker.readAnswered(2, 7, 2);
  assert.deepEqual(checker.violations, []);
  checker.readStarted(8);
  checker.readAnswered(2, 8, 1);
  checker.readAnswered(2, 99, 5);
  assert.match(checker.violations[0]!, /n2 read #8 at index 1, but 2 was committed before it began/);
  assert.match(checker.violations[1]!, /read #99, which nobody asked/);
});

test("configuration: two nodes with different configurations after the same index", () => {
  const checker = new SafetyChecker();
  const conf = { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
  checker.configurationAt(1, 10, conf);
  checker.configurationAt(2, 10, { ...conf, voters: [3, 2, 1] }); // order does not matter
  assert.deepEqual(checker.violations, []);
  checker.configurationAt(3, 10, { ...conf, learners: [4] });
  assert.match(checker.violations[0]!, /configuration: after applying 10 n3 has voters=\(1,2,3\) learners=\(4\), n1 had voters=\(1,2,3\)/);
});
