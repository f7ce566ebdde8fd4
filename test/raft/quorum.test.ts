import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  jointCommittedIndex,
  jointQuorumActive,
  jointVoteResult,
  majorityCommittedIndex,
  majorityVoteResult,
} from "../../src/raft/quorum.js";

const acked = (m: Record<number, number>) => (id: number) => m[id];

test("majority commit index: the quorum-th largest acknowledged index", () => {
  assert.equal(majorityCommittedIndex(new Set([1, 2, 3]), acked({ 1: 5, 2: 3, 3: 1 })), 3);
  assert.equal(majorityCommittedIndex(new Set([1, 2, 3, 4]), acked({ 1: 5, 2: 3, 3: 1, 4: 4 })), 3);
  assert.equal(majorityCommittedIndex(new Set([1]), acked({ 1: 7 })), 7);
  // Unknown voters count as 0.
  assert.equal(majorityCommittedIndex(new Set([1, 2, 3]), acked({ 1: 5 })), 0);
  assert.equal(majorityCommittedIndex(new Set(), acked({})), Number.POSITIVE_INFINITY);
});

test("majority commit index: a majority has it and no larger index has a majority (property)", () => {
  fc.assert(
    fc.property(fc.array(fc.nat(100), { minLength: 1, maxLength: 9 }), (indexes) => {
      const voters = new Set(indexes.map((_, i) => i + 1));
      const result = majorityCommittedIndex(voters, (id) => indexes[id - 1]);
      const quorum = Math.floor(voters.size / 2) + 1;
      const atLeast = (n: number) => indexes.filter((x) => x >= n).length;
      return atLeast(result) >= quorum && atLeast(result + 1) < quorum;
    }),
  );
});

test("majority vote result: won, lost, pending", () => {
  const voters = new Set([1, 2, 3]);
  assert.equal(majorityVoteResult(voters, new Map([[1, true]])), "pending");
  assert.equal(majorityVoteResult(voters, new Map([[1, true], [2, true]])), "won");
  assert.equal(majorityVoteResult(voters, new Map([[1, true], [2, false]])), "pending");
  assert.equal(majorityVoteResult(voters, new Map([[1, false], [2, false]])), "lost");
  // Votes from non-voters do not count.
  assert.equal(majorityVoteResult(voters, new Map([[1, true], [9, true]])), "pending");
  assert.equal(majorityVoteResult(new Set(), new Map()), "won");
  const four = new Set([1, 2, 3, 4]);
  assert.equal(majorityVoteResult(four, new Map([[1, true], [2, true]])), "pending");
  assert.equal(majorityVoteResult(four, new Map([[1, false], [2, false]])), "lost");
});

test("joint: both majorities must agree", () => {
  const voters = { incoming: new Set([1, 2, 3]), outgoing: new Set([1, 4, 5]) };
  // Incoming commits 5 (1,2), outgoing only 1 (1 and one of 4,5 at 1).
  assert.equal(jointCommittedIndex(voters, acked({ 1: 5, 2: 5, 3: 0, 4: 1, 5: 0 })), 1);
  assert.equal(jointVoteResult(voters, new Map([[1, true], [2, true]])), "pending");
  assert.equal(jointVoteResult(voters, new Map([[1, true], [2, true], [4, true]])), "won");
  assert.equal(jointVoteResult(voters, new Map([[1, true], [2, true], [4, false], [5, false]])), "lost");
  // A joint config with an empty outgoing half behaves like its incoming half.
  const simple = { incoming: new Set([1, 2, 3]), outgoing: new Set<number>() };
  assert.equal(jointCommittedIndex(simple, acked({ 1: 4, 2: 4, 3: 0 })), 4);
  assert.equal(jointVoteResult(simple, new Map([[1, true], [3, true]])), "won");
});

test("joint quorum active (CheckQuorum)", () => {
  const voters = { incoming: new Set([1, 2, 3]), outgoing: new Set([3, 4, 5]) };
  assert.equal(jointQuorumActive(voters, (id) => [1, 2, 3, 4].includes(id)), true);
  assert.equal(jointQuorumActive(voters, (id) => [1, 2].includes(id)), false);
});
