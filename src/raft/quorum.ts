// Quorum math as pure functions: the commit index a set of voters agrees on and the outcome of a
// vote, for a simple majority and for a joint configuration (two majorities that must both agree).
//
// Invariants: an empty majority config commits everything (Infinity) and wins every vote, so a
// joint config whose outgoing half is empty behaves exactly like its incoming half.

import type { NodeId } from "./types.js";

export type VoteResult = "pending" | "lost" | "won";

// The acknowledged (persisted) log index of a voter, or undefined when unknown.
export type AckedIndex = (id: NodeId) => number | undefined;

// Reused by majorityCommittedIndex: the leader computes it on every append response, and a fresh
// array plus Array.prototype.sort allocated ~5% of all a leader allocates per request.
const scratchIndexes: number[] = [];

// The largest index that a majority of `voters` has acknowledged.
export function majorityCommittedIndex(voters: ReadonlySet<NodeId>, acked: AckedIndex): number {
  if (voters.size === 0) return Number.POSITIVE_INFINITY;
  // Insertion sort, descending (a handful of voters): the quorum-th largest is committed.
  const indexes = scratchIndexes;
  let count = 0;
  for (const id of voters) {
    const index = acked(id) ?? 0;
    let at = count++;
    while (at > 0 && indexes[at - 1]! < index) {
      indexes[at] = indexes[at - 1]!;
      at--;
    }
    indexes[at] = index;
  }
  const quorum = Math.floor(voters.size / 2) + 1;
  return indexes[quorum - 1]!;
}

// Outcome of a vote among `voters` given the answers received so far (true = granted).
export function majorityVoteResult(voters: ReadonlySet<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  if (voters.size === 0) return "won";
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const vote = votes.get(id);
    if (vote === undefined) missing++;
    else if (vote) granted++;
  }
  const quorum = Math.floor(voters.size / 2) + 1;
  if (granted >= quorum) return "won";
  if (granted + missing >= quorum) return "pending";
  return "lost";
}

export interface JointVoters {
  incoming: ReadonlySet<NodeId>;
  outgoing: ReadonlySet<NodeId>; // empty when not in joint consensus
}

export function jointCommittedIndex(voters: JointVoters, acked: AckedIndex): number {
  return Math.min(majorityCommittedIndex(voters.incoming, acked), majorityCommittedIndex(voters.outgoing, acked));
}

export function jointVoteResult(voters: JointVoters, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  const incoming = majorityVoteResult(voters.incoming, votes);
  const outgoing = majorityVoteResult(voters.outgoing, votes);
  if (incoming === outgoing) return incoming;
  if (incoming === "lost" || outgoing === "lost") return "lost";
  return "pending"; // one half won, the other is still open
}

// Whether the nodes for which `active` holds form a quorum (CheckQuorum).
export function jointQuorumActive(voters: JointVoters, active: (id: NodeId) => boolean): boolean {
  const votes = new Map<NodeId, boolean>();
  for (const id of voters.incoming) votes.set(id, active(id));
  for (const id of voters.outgoing) votes.set(id, active(id));
  return jointVoteResult(voters, votes) === "won";
}
